"""OneVisionLlavaProcessor: placeholders expanded to the tower's token counts, for images and codec videos."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_llava import LMM_PAGE, PATCH, make_model, make_tokenizer
from transformers import AutoProcessor

from onevision_encoder import OneVisionEncoderImageProcessor, OneVisionLlavaProcessor, select_patches
from onevision_encoder.jobs.preprocess import process_video
from onevision_encoder.video.synthetic import make_clip, write_clip

# A 32x32 lmm-preset selection in 4-pixel patches: 8 mosaics of 8x8 patches, 4x4 = 16 tokens each after merging.
SELECTION = {"size": 32, "patch_size": PATCH, "num_patches": 8 * 64, "num_frames": 16}
VIDEO_TOKENS = 8 * 16


def make_processor(tokenizer, **kwargs) -> OneVisionLlavaProcessor:
    # Native resolution capped at 32x32 pixels keeps the tiny model's sequences short.
    image_processor = OneVisionEncoderImageProcessor(
        mode="native", patch_size=PATCH, min_pixels=8 * 8, max_pixels=32 * 32
    )
    return OneVisionLlavaProcessor(image_processor, tokenizer, video_selection=SELECTION, **kwargs)


def picture(height: int, width: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    return write_clip(folder / "walk.mp4", make_clip("moving_object", num_frames=16, size=(48, 64)))


@pytest.fixture(scope="module")
def packed(video, tmp_path_factory) -> Path:
    """The video's `onevision preprocess --preset lmm --pack` folder, written by the command's own code."""
    folder = tmp_path_factory.mktemp("packed") / "walk.mp4"
    options = {"preset": "lmm", **SELECTION}
    process_video((str(video), str(folder)), options=options, pack=True, image_format="jpg", tag="test.")
    return folder


def test_mixed_images_and_packed_video_run_through_the_model(tokenizer, packed):
    processor, model = make_processor(tokenizer), make_model(tokenizer)
    # Native sizes, rounded to multiples of patch x merge = 8: 16x32 (8 tokens) and 40x24 (15 tokens).
    images = [picture(20, 30, 0), picture(40, 24, 1)]
    inputs = processor(
        text=["describe the picture <image> a <image>", "describe the clip <video> a blue dog"],
        images=images,
        videos=[packed],
        return_tensors="pt",
    )
    assert [tuple(image.shape) for image in inputs["pixel_values"]] == [(3, 16, 32), (3, 40, 24)]
    assert [tuple(video.shape) for video in inputs["pixel_values_videos"]] == [(8, 3, 32, 32)]
    assert [tuple(where.shape) for where in inputs["video_positions_thw"]] == [(8 * 64, 3)]
    vision = {key: inputs[key] for key in ("pixel_values", "pixel_values_videos", "video_positions_thw")}
    with torch.no_grad():
        image_parts, video_parts = model.get_vision_features(**vision)
        output = model(**inputs)
    assert [part.features.shape[0] for part in image_parts] == [8, 15]
    assert [part.features.shape[0] for part in video_parts] == [VIDEO_TOKENS]
    # Each image's tokens form one run where its <image> stood, in order; padding follows the shorter text.
    image_id, video_id = model.config.image_token_id, model.config.video_token_id
    first = inputs["input_ids"][0].tolist()
    expected = tokenizer("describe the picture", add_special_tokens=False)["input_ids"]
    expected += [image_id] * 8 + tokenizer("a", add_special_tokens=False)["input_ids"] + [image_id] * 15
    assert first[: len(expected)] == expected
    assert int((inputs["input_ids"][1] == video_id).sum()) == VIDEO_TOKENS
    assert inputs["attention_mask"].shape == inputs["input_ids"].shape
    assert output.logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(output.logits).all()
    assert processor.image_token_id == image_id and processor.video_token_id == video_id


def test_video_file_selected_on_the_fly_equals_its_packed_folder(tokenizer, video, packed, tmp_path):
    processor = make_processor(tokenizer)
    prompt = "describe the clip <video>"
    from_folder = processor(text=prompt, videos=packed)
    from_file = processor(text=prompt, videos=str(video))
    assert torch.equal(from_file["input_ids"], from_folder["input_ids"])
    assert torch.equal(from_file["video_positions_thw"][0], from_folder["video_positions_thw"][0])
    assert torch.equal(
        from_file["video_positions_thw"][0], torch.from_numpy(np.load(packed / "positions_thw.npy")).long()
    )
    # The folder's mosaics are JPEG; a lossless --pack (--image-format png) holds exactly the file's pixels.
    lossless = tmp_path / "walk.mp4"
    options = {"preset": "lmm", **SELECTION}
    process_video((str(video), str(lossless)), options=options, pack=True, image_format="png", tag="test.")
    assert torch.equal(
        from_file["pixel_values_videos"][0], processor(text=prompt, videos=lossless)["pixel_values_videos"][0]
    )
    selection = select_patches(video, preset="lmm", keep_frames=True, **SELECTION)
    from_selection = processor(text=prompt, videos=selection)
    assert torch.equal(from_selection["pixel_values_videos"][0], from_file["pixel_values_videos"][0])


def test_a_default_processor_selects_video_files_in_the_encoders_patches(tokenizer, video):
    """A default image processor (14-pixel patches, the released encoders') and no video_selection: a video file
    is selected on the lmm preset's 36 x 36 patch grid in 14-pixel patches (504 pixels, the same K and positions
    as the release's 576-pixel, 16-pixel mosaics) and runs through a model of that patch size."""
    processor = OneVisionLlavaProcessor(tokenizer=tokenizer, image_processor=OneVisionEncoderImageProcessor())
    inputs = processor(text="describe the clip <video>", videos=str(video))
    mosaics, positions = inputs["pixel_values_videos"][0], inputs["video_positions_thw"][0]
    assert mosaics.shape == (8, 3, 504, 504)
    assert positions.shape == (8 * 36 * 36, 3)
    # The positions on the encoder's grid: the 64 sampled frames of 36 x 36 patches, the first frame whole.
    assert positions[:, 0].max() < 64 and positions[:, 1:].max() == 35 and positions[:, 1:].min() == 0
    assert torch.equal(positions[: 36 * 36, 0], torch.zeros(36 * 36, dtype=positions.dtype))
    rule = select_patches(video, preset="lmm", patch_size=14, size=504, keep_frames=True)
    assert torch.equal(positions, torch.from_numpy(rule.positions_thw.astype(np.int64)))
    # On the same grid the selection is nearly the release's (576 pixels, 16-pixel patches): only the pixels
    # each patch's score sums over are resampled.
    release = select_patches(video, preset="lmm", keep_frames=True)
    chosen, released = set(rule.visible_indices.tolist()), set(release.visible_indices.tolist())
    assert len(chosen & released) / len(chosen | released) > 0.95
    video_tokens = 8 * (504 // 14 // 2) ** 2  # 2592, as for the release's 576 / 16 mosaics
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == video_tokens
    model = make_model(tokenizer, patch_size=14, max_position_embeddings=4096)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()

    # A selection made in other patches (the lmm preset's own 16) is refused, naming what to select with.
    with pytest.raises(ValueError, match=r"in 14-pixel patches .*select with --patch-size 14 --size 504"):
        processor(text="<video>", videos=release)
    with pytest.raises(ValueError, match="video_selection patch_size 16 differs from the image processor's 14"):
        OneVisionLlavaProcessor(OneVisionEncoderImageProcessor(), tokenizer, video_selection={"patch_size": 16})


def test_placeholder_and_media_counts_must_match(tokenizer, packed, tmp_path):
    processor = make_processor(tokenizer)
    with pytest.raises(ValueError, match=r"holds 2 <image> placeholder\(s\) but 1 image\(s\) were given"):
        processor(text="<image> describe <image>", images=[picture(16, 16, 0)])
    with pytest.raises(ValueError, match=r"holds 1 <video> placeholder\(s\) but 0 video\(s\) were given"):
        processor(text="describe the clip <video>")
    with pytest.raises(ValueError, match="is not a `onevision preprocess --pack` folder"):
        processor(text="<video>", videos=tmp_path)
    other_patch = OneVisionLlavaProcessor(OneVisionEncoderImageProcessor(mode="native", patch_size=8), tokenizer)
    with pytest.raises(ValueError, match=r"in 8-pixel patches make 128 patches.*--patch-size 8"):
        other_patch(text="<video>", videos=packed)


def test_token_count_is_the_model_rule(tokenizer):
    processor, model = make_processor(tokenizer), make_model(tokenizer)
    shapes = [(3, 8, 8), (3, 16, 40), (2, 3, 24, 16)]
    samples = [torch.randn(shape) for shape in shapes]
    with torch.no_grad():
        images, videos = model.get_vision_features(samples[:2], samples[2:], None)
    assert [processor.token_count(sample) for sample in samples] == [p.features.shape[0] for p in images + videos]
    with pytest.raises(ValueError, match="12x8 frame does not split into 8x8 pixel blocks"):
        processor.token_count(torch.randn(3, 12, 8))


def test_chat_template_passes_through(tokenizer):
    chat = make_tokenizer()
    chat.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
    processor = make_processor(chat)
    messages = [{"role": "user", "content": "describe the picture <image>"}]
    prompt = processor.apply_chat_template(messages, tokenize=False)
    assert (
        prompt
        == chat.apply_chat_template(messages, tokenize=False)
        == "user : describe the picture <image> assistant :"
    )
    assert int((processor(text=prompt, images=picture(16, 16, 0))["input_ids"] == processor.image_token_id).sum()) == 4


def test_save_and_load(tokenizer, packed, tmp_path):
    processor = make_processor(tokenizer, spatial_merge=2)
    processor.save_pretrained(tmp_path)
    inputs = processor(text="describe <image> the clip <video>", images=picture(20, 30, 0), videos=packed)
    for loaded in (OneVisionLlavaProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, OneVisionLlavaProcessor)
        assert (loaded.video_selection, loaded.image_processor.mode) == (SELECTION, "native")
        again = loaded(text="describe <image> the clip <video>", images=picture(20, 30, 0), videos=packed)
        assert torch.equal(again["input_ids"], inputs["input_ids"])
        for key in ("pixel_values", "pixel_values_videos", "video_positions_thw"):
            assert all(torch.equal(a, b) for a, b in zip(again[key], inputs[key], strict=True))
    with pytest.raises(ValueError, match="video_selection may not set"):
        OneVisionLlavaProcessor(processor.image_processor, tokenizer, video_selection={"preset": "encoder"})


def test_readme_processor_example_runs():
    section = LMM_PAGE.read_text().split("# The LMM probe", 1)[1].split("\n## ", 1)[0]
    blocks = [
        block
        for block in re.findall(r"```python\n(.*?)```", section, flags=re.S)
        if "OneVisionLlavaProcessor(" in block
    ]
    assert blocks, "docs/lmm.md's LMM probe section has no processor example"
    exec(compile(blocks[0], "docs/lmm.md: The LMM probe (processor)", "exec"), {})
