"""transformers' ``ImageProcessingTestMixin`` on ``OneVisionEncoderImageProcessor`` (4.57's and 5.x's mixins).

The tests run as transformers' own models run them; the few that cannot apply to a processor living outside
transformers are skipped or adapted below, each with its reason.
"""

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import unittest

import numpy as np
from tests.test_image_processing_common import ImageProcessingTestMixin, prepare_image_inputs

from onevision_encoder.model.image_processing import OneVisionEncoderImageProcessor
from tests import test_image_processing_common as common

# transformers 5 keeps a shared tester (classes found by the test file's folder name); 4.57 has each model
# test write its own.
SharedTester = getattr(common, "ImageProcessingTester", None)


class OneVisionEncoderImageProcessingTester:
    def __init__(self, parent, batch_size=7, num_channels=3, min_resolution=30, max_resolution=400):
        self.parent = parent
        self.batch_size = batch_size
        self.num_channels = num_channels
        self.min_resolution = min_resolution
        self.max_resolution = max_resolution
        self.size = {"shortest_edge": 20}
        self.crop_size = {"height": 18, "width": 18}
        self.patch_size = 6
        self.image_mean = [0.5, 0.4, 0.3]
        self.image_std = [0.2, 0.3, 0.4]
        self.do_convert_rgb = True
        self.image_processing_classes = {"pil": OneVisionEncoderImageProcessor}

    def prepare_image_processor_dict(self):
        return {
            "size": self.size,
            "crop_size": self.crop_size,
            "patch_size": self.patch_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "do_convert_rgb": self.do_convert_rgb,
        }

    def expected_output_image_shape(self, images):
        return self.num_channels, self.crop_size["height"], self.crop_size["width"]

    def prepare_image_inputs(self, equal_resolution=False, numpify=False, torchify=False, **kwargs):
        return prepare_image_inputs(
            batch_size=kwargs.get("batch_size", self.batch_size),
            num_channels=kwargs.get("num_channels", self.num_channels),
            min_resolution=self.min_resolution,
            max_resolution=self.max_resolution,
            equal_resolution=equal_resolution,
            numpify=numpify,
            torchify=torchify,
        )

    def prepare_processor_inputs(self, **kwargs):
        return {"images": self.prepare_image_inputs(**kwargs)}


class OneVisionEncoderImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processing_class = OneVisionEncoderImageProcessor  # 4.57
    image_processor_tester_class = OneVisionEncoderImageProcessingTester  # 5.x
    test_cast_dtype = True

    def setUp(self):
        super().setUp()
        self.image_processor_tester = OneVisionEncoderImageProcessingTester(self)

    @property
    def image_processor_dict(self):
        return self.image_processor_tester.prepare_image_processor_dict()

    def test_call_numpy_4_channels(self):
        # 4.57's version leaves do_convert_rgb on: RGBA then becomes RGB (composited onto white), so 3 channels
        # come out; 5.x's passes do_convert_rgb=False and expects the 4 channels kept. Both run as written,
        # with the expected channel count following do_convert_rgb.
        if SharedTester is None:
            tester = self.image_processor_tester
            expected_shape = tester.expected_output_image_shape
            tester.expected_output_image_shape = lambda images: (3, *expected_shape(images)[1:])
        super().test_call_numpy_4_channels()

    def test_image_processor_preprocess_arguments(self):
        # The mixin checks one of transformers' two validations (a `_valid_processor_keys` list, or a warning
        # from `filter_out_non_signature_kwargs`) and skips otherwise. Ours is stricter: an unknown keyword is
        # a TypeError naming it, and every declared keyword is accepted.
        processor = OneVisionEncoderImageProcessor(**self.image_processor_dict)
        images = self.image_processor_tester.prepare_image_inputs()
        with self.assertRaisesRegex(TypeError, "extra_argument"):
            processor(images, extra_argument=True)

    def test_pil_can_run_without_torchvision(self):
        # The mixin's subprocess loads through AutoImageProcessor without importing onevision_encoder, and
        # importing it is what registers the class (no trust_remote_code, no auto_map). The same check, with
        # that import added.
        processor = OneVisionEncoderImageProcessor(**self.image_processor_dict)
        inputs = self.image_processor_tester.prepare_processor_inputs(equal_resolution=False)
        expected = processor(**inputs, return_tensors=None)
        script = textwrap.dedent(
            """
            import pickle
            import sys
            sys.modules["torchvision"] = None  # `import torchvision` raises ImportError

            import onevision_encoder  # registers the Auto classes
            from transformers import AutoImageProcessor, AutoConfig

            folder, inputs_path, outputs_path = sys.argv[1:]
            processor = AutoImageProcessor.from_pretrained(folder)
            assert type(processor).__name__ == "OneVisionEncoderImageProcessor", type(processor)
            with open(inputs_path, "rb") as f:
                inputs = pickle.load(f)
            with open(outputs_path, "wb") as f:
                pickle.dump(processor(**inputs, return_tensors=None).data, f)
            """
        )
        from onevision_encoder import OneVisionEncoderConfig

        with tempfile.TemporaryDirectory() as folder:
            processor.save_pretrained(folder)
            OneVisionEncoderConfig(hidden_size=32, num_attention_heads=2).save_pretrained(folder)
            inputs_path, outputs_path = os.path.join(folder, "in.pkl"), os.path.join(folder, "out.pkl")
            with open(inputs_path, "wb") as f:
                pickle.dump(inputs, f)
            result = subprocess.run(
                [sys.executable, "-c", script, folder, inputs_path, outputs_path], capture_output=True, text=True
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(outputs_path, "rb") as f:
                outputs = pickle.load(f)
        np.testing.assert_equal(outputs, expected.data)


# transformers' policy for models added to its own repository (after 2025-09 in 5.x, any new one in 4.57): a
# torchvision ("fast") image processor. Here torchvision is optional (each release pins one torch version),
# so the image processor must not need it. Each version's mixin has one of the two names.
TORCHVISION_POLICY = "transformers' rule for its own new models (a torchvision backend); torchvision is optional here"
for _name in ("test_new_models_require_torchvision_backend", "test_new_models_require_fast_image_processor"):
    if hasattr(ImageProcessingTestMixin, _name):
        setattr(OneVisionEncoderImageProcessingTest, _name, unittest.skip(TORCHVISION_POLICY)(lambda self: None))
