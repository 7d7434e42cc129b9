"""transformers' ``VideoProcessingTestMixin`` on ``OneVisionEncoderVideoProcessor`` (4.57's and 5.x's mixins).

The processor returns exactly the model's inputs: ``pixel_values`` in the model's ``[B, C, T, H, W]`` layout
(transformers' video processors give ``[B, T, C, H, W]`` as ``pixel_values_videos``) plus ``visible_indices``.
The two mixin tests that index frames at axis 1 are run here with the frame axis at 2; the rest run as written.
"""

import unittest

import pytest

pytest.importorskip("torchvision", reason="the video processor needs torchvision (the `video` extra)")

from tests.test_video_processing_common import VideoProcessingTestMixin, prepare_video_inputs
from transformers.video_utils import VideoMetadata

from onevision_encoder.model.video_processing import OneVisionEncoderVideoProcessor


class OneVisionEncoderVideoProcessingTester:
    def __init__(self, parent, batch_size=5, num_frames=8, num_channels=3, min_resolution=30, max_resolution=80):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.num_channels = num_channels
        self.min_resolution = min_resolution
        self.max_resolution = max_resolution
        self.size = {"shortest_edge": 20}
        self.crop_size = {"height": 18, "width": 18}

    def prepare_video_processor_dict(self):
        return {
            "size": self.size,
            "crop_size": self.crop_size,
            "patch_size": 6,
            "image_mean": [0.5, 0.4, 0.3],
            "image_std": [0.2, 0.3, 0.4],
            "do_sample_frames": False,
        }

    def expected_output_video_shape(self, videos):
        return self.num_channels, self.num_frames, self.crop_size["height"], self.crop_size["width"]

    def prepare_video_inputs(self, equal_resolution=False, return_tensors="pil"):
        return prepare_video_inputs(
            batch_size=self.batch_size,
            num_frames=self.num_frames,
            num_channels=self.num_channels,
            min_resolution=self.min_resolution,
            max_resolution=self.max_resolution,
            equal_resolution=equal_resolution,
            return_tensors=return_tensors,
        )


class OneVisionEncoderVideoProcessingTest(VideoProcessingTestMixin, unittest.TestCase):
    fast_video_processing_class = OneVisionEncoderVideoProcessor
    input_name = "pixel_values"
    test_cast_dtype = True

    def setUp(self):
        super().setUp()
        self.video_processor_tester = OneVisionEncoderVideoProcessingTester(self)

    @property
    def video_processor_dict(self):
        return self.video_processor_tester.prepare_video_processor_dict()

    def test_visible_indices_place_the_frames_on_the_grid(self):
        # Not in the mixin: the second model input. 8 frames of 3x3 patches on virtual frames floor(linspace(0, 63, 8)).
        processor = OneVisionEncoderVideoProcessor(**self.video_processor_dict)
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="np")
        indices = processor(videos)["visible_indices"]
        self.assertEqual(tuple(indices.shape), (self.video_processor_tester.batch_size, 8 * 9))
        self.assertEqual(indices[0, ::9].tolist(), [0 * 9, 9 * 9, 18 * 9, 27 * 9, 36 * 9, 45 * 9, 54 * 9, 63 * 9])

    def test_video_processor_preprocess_arguments(self):
        # The mixin checks one of transformers' two validations (a `_valid_processor_keys` list, or a warning
        # from `filter_out_non_signature_kwargs`) and skips otherwise. Ours is stricter: an unknown keyword is
        # a TypeError naming it.
        processor = OneVisionEncoderVideoProcessor(**self.video_processor_dict)
        videos = self.video_processor_tester.prepare_video_inputs()
        with self.assertRaisesRegex(TypeError, "extra_argument"):
            processor(videos, extra_argument=True)

    def test_call_sample_frames(self):
        # The mixin's steps, with the frame axis of [B, C, T, H, W] (2, not 1).
        processor = OneVisionEncoderVideoProcessor(**self.video_processor_dict)
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="torch")
        processor.do_sample_frames = False
        self.assertEqual(processor(videos[0], num_frames=3)[self.input_name].shape[2], 8)
        self.assertEqual(processor(videos, num_frames=3)[self.input_name].shape[2], 8)
        processor.do_sample_frames = True
        self.assertEqual(processor(videos[0], num_frames=3)[self.input_name].shape[2], 3)
        self.assertEqual(processor(videos, num_frames=3)[self.input_name].shape[2], 3)
        with self.assertRaises(ValueError):
            processor.sample_frames(metadata=VideoMetadata(total_num_frames=8), fps=3)
        metadata = [[{"duration": 2.0, "total_num_frames": 8, "fps": 4}]]
        single = processor(videos[0], fps=3, video_metadata=metadata)[self.input_name]
        batched = processor(videos, fps=3, video_metadata=metadata * len(videos))[self.input_name]
        self.assertEqual(single.shape[2], 6)
        self.assertEqual(batched.shape[2], 6)
        metadata = [[VideoMetadata(duration=2.0, total_num_frames=8, fps=4)]]
        self.assertEqual(processor(videos[0], fps=3, video_metadata=metadata)[self.input_name].shape[2], 6)
        with self.assertRaises(ValueError):
            processor(videos[0], num_frames=10)

    def test_call_numpy_4_channels(self):
        # The mixin's steps (RGBA frames, channels_last, scalar mean and std); do_convert_rgb is on, so 3
        # channels come out, on axis 1 of [B, C, T, H, W].
        processor = OneVisionEncoderVideoProcessor(**self.video_processor_dict)
        self.video_processor_tester.num_channels = 4
        videos = self.video_processor_tester.prepare_video_inputs(equal_resolution=False, return_tensors="pil")
        options = {"input_data_format": "channels_last", "image_mean": 0.0, "image_std": 1.0}
        single = processor(videos[0], return_tensors="pt", **options)[self.input_name]
        batched = processor(videos, return_tensors="pt", **options)[self.input_name]
        self.assertEqual(tuple(single.shape), (1, 3, 8, 18, 18))
        self.assertEqual(tuple(batched.shape), (self.video_processor_tester.batch_size, 3, 8, 18, 18))
