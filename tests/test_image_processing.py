"""The processor: CLIP equality in crop mode, the native-resolution mode, videos, save/load."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoImageProcessor

import onevision_encoder  # noqa: F401 - registers the Auto classes
from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderImageProcessor
from onevision_encoder.model.image_processing import CLIP_MEAN, CLIP_STD, native_resolution_size


def clip_reference(size: int):
    """transformers' own CLIP processor (its PIL backend in 5.x, the same class under its 4.x name)."""
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def random_image(height, width, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    # Smooth content plus noise: bicubic resampling differences would show on both.
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 7.0)[..., None] * 60 + np.cos(yy / 11.0)[..., None] * 60 + 128).repeat(3, -1)
    array = np.clip(base + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert(mode)


@pytest.mark.parametrize("size", [(480, 640), (700, 333), (448, 448), (300, 200), (5, 40)])
def test_crop_mode_equals_clip_image_processor(size):
    images = [random_image(*size, seed=1), random_image(*size, seed=2)]
    ours = OneVisionEncoderImageProcessor()(images=images)["pixel_values"]
    reference = torch.as_tensor(np.asarray(clip_reference(448)(images=images, return_tensors="np")["pixel_values"]))
    assert ours.shape == reference.shape == (2, 3, 448, 448)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_array_tensor_and_pil_inputs_agree():
    image = random_image(120, 90, seed=3)
    array = np.array(image)
    processor = OneVisionEncoderImageProcessor()
    from_pil = processor(images=image)["pixel_values"]
    torch.testing.assert_close(processor(images=array)["pixel_values"], from_pil)
    torch.testing.assert_close(processor(images=torch.from_numpy(array).permute(2, 0, 1))["pixel_values"], from_pil)
    grey = random_image(120, 90, seed=4, mode="L")
    assert processor(images=grey)["pixel_values"].shape == (1, 3, 448, 448)


def test_bad_pixels_are_refused_by_name():
    with pytest.raises(ValueError, match="must hold 0-255"):
        OneVisionEncoderImageProcessor()(images=np.full((32, 32, 3), 300, dtype=np.int32))
    with pytest.raises(ValueError, match="NaN"):
        OneVisionEncoderImageProcessor()(images=np.full((32, 32, 3), np.nan, dtype=np.float32))
    with pytest.raises(TypeError, match="expected a PIL image"):
        OneVisionEncoderImageProcessor()(images=["not an image"])


@pytest.mark.parametrize(
    "override",
    [
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]},
        {"image_mean": 0.0, "image_std": 1.0},
        {"do_normalize": False},
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 42}},
        {"size": 64, "crop_size": 56},
        {"do_resize": False},
        {"do_center_crop": False, "size": {"shortest_edge": 56}},
        {"do_rescale": False},
        {"rescale_factor": 1 / 127.5},
        {"resample": Image.Resampling.NEAREST},
        {"mode": "native", "max_pixels": 112 * 112},
    ],
    ids=lambda override: ",".join(override),
)
def test_standard_arguments_per_call_equal_the_same_attributes(override):
    image = random_image(120, 90, seed=5)
    per_call = OneVisionEncoderImageProcessor()(images=image, **override)["pixel_values"]
    configured = OneVisionEncoderImageProcessor(**override)(images=image)["pixel_values"]
    torch.testing.assert_close(per_call, configured, atol=0, rtol=0)
    default = OneVisionEncoderImageProcessor()(images=image)["pixel_values"]
    assert per_call.shape != default.shape or not torch.equal(per_call, default)


def test_per_call_arguments_do_what_they_say():
    image = random_image(120, 90, seed=6)
    array = np.asarray(image)
    processor = OneVisionEncoderImageProcessor()
    plain = processor(images=image, do_resize=False, do_center_crop=False, do_normalize=False)["pixel_values"]
    torch.testing.assert_close(plain[0].permute(1, 2, 0), torch.from_numpy(array / 255).float(), atol=1e-6, rtol=0)
    raw = processor(images=image, do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)
    assert torch.equal(raw["pixel_values"][0].permute(1, 2, 0), torch.from_numpy(array).float())
    shifted = processor(images=image, image_mean=0.5, image_std=0.5)["pixel_values"]
    unnormalised = processor(images=image, do_normalize=False)["pixel_values"]
    torch.testing.assert_close(shifted, (unnormalised - 0.5) / 0.5)
    assert processor(images=image, size=32, crop_size=28)["pixel_values"].shape == (1, 3, 28, 28)
    last = processor(images=image, data_format="channels_last")["pixel_values"]
    torch.testing.assert_close(last, processor(images=image)["pixel_values"].permute(0, 2, 3, 1))
    chw = processor(images=array.transpose(2, 0, 1), input_data_format="channels_first")["pixel_values"]
    torch.testing.assert_close(chw, processor(images=image)["pixel_values"])


def test_unknown_arguments_raise_type_error():
    with pytest.raises(TypeError, match="unexpected arguments: \\['image_meen'\\]"):
        OneVisionEncoderImageProcessor()(images=random_image(32, 32), image_meen=0.5)


def test_return_tensors_none_gives_lists_of_arrays():
    images = [random_image(64, 48, seed=s) for s in range(2)]
    processor = OneVisionEncoderImageProcessor(size=28, crop_size=28)
    out = processor(images=images, return_tensors=None)["pixel_values"]
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(a, np.ndarray) for a in out)
    stacked = processor(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(np.stack(out), stacked)
    torch.testing.assert_close(processor(images=images)["pixel_values"], torch.from_numpy(stacked))


def test_float_images_in_unit_range_are_not_rescaled_again(caplog):
    image = random_image(140, 112, seed=7)  # native size: no resampling, so float and uint8 agree exactly
    processor = OneVisionEncoderImageProcessor()
    expected = processor(images=image, mode="native")["pixel_values"]
    as_float = np.asarray(image, dtype=np.float32) / 255
    with caplog.at_level("WARNING"):
        got = processor(images=as_float, mode="native")["pixel_values"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert "already rescaled" in caplog.text
    silent = processor(images=as_float, mode="native", do_rescale=False)["pixel_values"]
    torch.testing.assert_close(silent, expected, atol=1e-5, rtol=0)
    # Floats in 0-255 are rescaled like uint8.
    torch.testing.assert_close(
        processor(images=as_float * 255, mode="native")["pixel_values"], expected, atol=1e-5, rtol=0
    )


def test_rgba_is_composited_onto_white_or_kept_with_do_convert_rgb_false():
    rgb = np.asarray(random_image(56, 56, seed=8))
    alpha = np.zeros((56, 56, 1), dtype=np.uint8)
    alpha[:, 28:] = 255
    rgba = np.concatenate([rgb, alpha], axis=-1)
    processor = OneVisionEncoderImageProcessor(mode="native", min_pixels=1, do_normalize=False)
    out = processor(images=rgba)["pixel_values"][0]
    assert out.shape == (3, 56, 56)
    torch.testing.assert_close(out[:, :, :28], torch.ones(3, 56, 28))  # transparent: white
    torch.testing.assert_close(out[:, :, 28:], torch.from_numpy(rgb[:, 28:] / 255).permute(2, 0, 1).float())
    from_pil = processor(images=Image.fromarray(rgba, mode="RGBA"))["pixel_values"][0]
    torch.testing.assert_close(from_pil, out)
    kept = processor(images=rgba, do_convert_rgb=False, image_mean=[0] * 4, image_std=[1] * 4)["pixel_values"][0]
    assert kept.shape == (4, 56, 56)
    with pytest.raises(ValueError, match="image_mean has 3 values but the image has 4 channels"):
        OneVisionEncoderImageProcessor()(images=rgba, do_convert_rgb=False)


@pytest.mark.parametrize(
    ("height", "width"),
    [(480, 640), (1080, 1920), (100, 3000), (20, 20), (448, 448), (333, 777)],
)
def test_native_size_keeps_aspect_rounds_to_patches_and_bounds_tokens(height, width):
    min_pixels, max_pixels = 112 * 112, 448 * 448
    out_h, out_w = native_resolution_size(height, width, 14, min_pixels, max_pixels)
    assert out_h % 14 == 0 and out_w % 14 == 0 and out_h >= 14 and out_w >= 14
    assert out_h * out_w <= max_pixels
    if height * width >= min_pixels and min(height, width) >= 28:
        assert out_h * out_w >= min_pixels
        # Aspect ratio within the rounding of one patch per side.
        assert abs(out_w / out_h - width / height) <= (14 / out_h + 14 / out_w) * width / height + 1e-9
    if height * width <= max_pixels and height % 14 == 0 and width % 14 == 0 and height * width >= min_pixels:
        assert (out_h, out_w) == (height, width)


def test_native_mode_processes_at_native_resolution():
    processor = OneVisionEncoderImageProcessor(mode="native")
    small = random_image(280, 420)
    out = processor(images=small)["pixel_values"]
    assert out.shape == (1, 3, 280, 420)
    expected = (np.asarray(small, dtype=np.float64) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    torch.testing.assert_close(out[0].permute(1, 2, 0).double(), torch.from_numpy(expected), atol=1e-5, rtol=0)
    mixed = processor(images=[small, random_image(1000, 500)])["pixel_values"]
    assert isinstance(mixed, list) and mixed[0].shape == (3, 280, 420)
    assert mixed[1].shape[1] * mixed[1].shape[2] <= 448 * 448 and mixed[1].shape[1] > mixed[1].shape[2]


def test_native_mode_override_per_call():
    processor = OneVisionEncoderImageProcessor()
    assert processor(images=random_image(280, 420), mode="native")["pixel_values"].shape == (1, 3, 280, 420)
    with pytest.raises(ValueError, match="mode must be one of"):
        processor(images=random_image(28, 28), mode="stretch")


def test_video_frames_become_a_clip_batch():
    processor = OneVisionEncoderImageProcessor()
    video = [random_image(240, 320, seed=s) for s in range(5)]
    out = processor(videos=[video, video])["pixel_values_videos"]
    assert out.shape == (2, 3, 5, 224, 224)
    single_frame = processor(images=video[2], mode="crop")["pixel_values"]
    assert single_frame.shape == (1, 3, 448, 448)
    as_array = processor(videos=np.stack([np.asarray(f) for f in video]))["pixel_values_videos"]
    torch.testing.assert_close(as_array, out[:1])
    reference = torch.as_tensor(np.asarray(clip_reference(224)(images=video, return_tensors="np")["pixel_values"]))
    torch.testing.assert_close(out[0].transpose(0, 1), reference, atol=1e-5, rtol=0)


def test_images_and_videos_together():
    processor = OneVisionEncoderImageProcessor()
    out = processor(images=random_image(64, 64), videos=[[random_image(64, 64)] * 2])
    assert out["pixel_values"].shape == (1, 3, 448, 448)
    assert out["pixel_values_videos"].shape == (1, 3, 2, 224, 224)


def test_native_video_frames_and_mismatched_videos():
    processor = OneVisionEncoderImageProcessor(mode="native")
    clip = processor(videos=[[random_image(360, 640)] * 3])["pixel_values_videos"]
    assert clip.shape[:3] == (1, 3, 3) and clip.shape[3] * clip.shape[4] <= 224 * 224
    with pytest.raises(ValueError, match="equal shape"):
        processor(videos=[[random_image(360, 640)] * 3, [random_image(640, 360)] * 3])
    with pytest.raises(ValueError, match="has no frames"):
        processor(videos=[[]])


def test_save_and_auto_load(tmp_path):
    processor = OneVisionEncoderImageProcessor(mode="native", max_pixels=224 * 224)
    processor.save_pretrained(tmp_path)
    OneVisionEncoderConfig(hidden_size=128, num_attention_heads=2).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, OneVisionEncoderImageProcessor)
    assert loaded.mode == "native" and loaded.max_pixels == 224 * 224
    image = random_image(500, 300)
    torch.testing.assert_close(loaded(images=image)["pixel_values"], processor(images=image)["pixel_values"])
