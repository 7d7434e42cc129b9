"""OneVisionEncoderVideoProcessor: uniform and codec sampling into exactly the model's inputs, its inputs,
frame sampling, errors, saving and Auto loading; read_video_frames; torchvision as an optional dependency."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cut_after, tiny_config, write_stream
from PIL import Image
from transformers import AutoVideoProcessor

from onevision_encoder import (
    CorruptVideoError,
    NotAVideoError,
    OneVisionEncoderImageProcessor,
    OneVisionEncoderModel,
    OneVisionEncoderVideoProcessor,
    VideoNotFoundError,
    chunk_visible_indices,
    frame_positions,
    read_video_frames,
    select_patches,
)
from onevision_encoder.video.synthetic import make_clip, write_clip

NUM_FRAMES = 40  # frames of the generated clip, 25 fps


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return write_clip(folder / "moving.mp4", make_clip("moving_object", num_frames=NUM_FRAMES, size=(224, 320)))


@pytest.fixture(scope="module")
def other_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other")
    return write_clip(folder / "panning.mp4", make_clip("panning", num_frames=NUM_FRAMES, size=(224, 320), seed=1))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OneVisionEncoderModel(tiny_config()).eval()


def test_uniform_sampling_gives_the_model_its_chunk(clip_path, model):
    out = OneVisionEncoderVideoProcessor()(videos=clip_path)
    assert set(out) == {"pixel_values", "visible_indices"}
    assert out["pixel_values"].shape == (1, 3, 8, 224, 224)
    expected = chunk_visible_indices(frame_positions(8), (16, 16))
    assert torch.equal(out["visible_indices"], expected.unsqueeze(0))
    # The frames are floor(linspace(0, N - 1, 8)) of the file, processed as the image processor does video frames.
    read = read_video_frames(clip_path, num_frames=8)
    assert read.frame_ids.tolist() == np.floor(np.linspace(0, NUM_FRAMES - 1, 8)).astype(int).tolist()
    reference = OneVisionEncoderImageProcessor()(videos=[list(read.frames)])["pixel_values_videos"]
    torch.testing.assert_close(out["pixel_values"], reference, atol=0, rtol=0)
    with torch.no_grad():
        tokens = model(**out).last_hidden_state
        placed = model(pixel_values=reference, visible_indices=expected).last_hidden_state
    assert tokens.shape == (1, 8 * 256, 128)
    torch.testing.assert_close(tokens, placed)


def test_frames_sit_on_the_grid_as_the_processor_is_told(clip_path):
    # floor(linspace(0, 63, 16)) and round(i / 15 * 63) differ at 6 of the 16 frames.
    floor, rounded = (frame_positions(16, rounding=rounding) for rounding in ("floor", "round"))
    assert (floor != rounded).sum() == 6
    for rounding, positions in (("floor", floor), ("round", rounded)):
        processor = OneVisionEncoderVideoProcessor(num_frames=16, frame_rounding=rounding)
        for out in (
            processor(videos=clip_path),
            OneVisionEncoderVideoProcessor()(videos=clip_path, num_frames=16, frame_rounding=rounding),
        ):
            assert torch.equal(out["visible_indices"][0], chunk_visible_indices(positions, (16, 16)))
    with pytest.raises(ValueError, match="rounding must be 'floor' or 'round'"):
        OneVisionEncoderVideoProcessor(frame_rounding="ceil")(videos=clip_path)


def test_codec_sampling_ignores_options_given_as_none(clip_path):
    # transformers 5's video-classification pipeline passes num_frames=None when the config has none.
    processor = OneVisionEncoderVideoProcessor(sampling="codec")
    out = processor(videos=clip_path, num_frames=None, num_patches=None)
    assert torch.equal(out["visible_indices"], processor(videos=clip_path)["visible_indices"])


def test_codec_sampling_equals_the_selections_model_inputs(clip_path, model):
    processor = OneVisionEncoderVideoProcessor()
    selection = select_patches(clip_path, keep_frames=True)
    with torch.no_grad():
        expected = model(**selection.model_inputs("mosaic")).last_hidden_state
        out = processor(videos=str(clip_path), sampling="codec", return_tensors="pt")
        assert set(out) == {"pixel_values", "visible_indices"}
        assert out["pixel_values"].shape == (1, 3, 8, 224, 224)
        torch.testing.assert_close(model(**out).last_hidden_state, expected, atol=1e-6, rtol=0)
        clip = processor(videos=clip_path, sampling="codec", return_clip=True)
        assert clip["pixel_values"].shape == (1, 3, 64, 224, 224)
        torch.testing.assert_close(model(**clip).last_hidden_state, expected, atol=1e-6, rtol=0)
    assert np.array_equal(out["visible_indices"][0].numpy(), selection.visible_indices)


def test_codec_options_and_metadata_come_through(clip_path):
    options = dict(num_patches=512, num_frames=16, anchors="first", mv_compensate="median")
    selection = select_patches(clip_path, keep_frames=True, **options)
    out = OneVisionEncoderVideoProcessor()(videos=clip_path, sampling="codec", return_metadata=True, **options)
    assert out["pixel_values"].shape == (1, 3, 2, 224, 224)  # 512 patches = 2 mosaic frames
    assert np.array_equal(out["visible_indices"][0].numpy(), selection.visible_indices)
    assert np.array_equal(out["positions_thw"][0].numpy(), selection.positions_thw)
    metadata = out["video_metadata"][0]
    assert metadata.frames_indices == selection.frame_ids.tolist()
    assert (metadata.total_num_frames, metadata.fps, metadata.height, metadata.width) == (NUM_FRAMES, 25.0, 224, 320)
    # The same options held by the processor (and saved with it) apply to every call.
    held = OneVisionEncoderVideoProcessor(sampling="codec", num_patches=512, anchors="first", mv_compensate="median")
    again = held(videos=clip_path, num_frames=16)
    assert torch.equal(again["visible_indices"], out["visible_indices"])
    assert torch.equal(again["pixel_values"], out["pixel_values"])


def test_a_batch_of_paths(clip_path, other_path):
    processor = OneVisionEncoderVideoProcessor()
    for sampling in ("uniform", "codec"):
        batch = processor(videos=[clip_path, other_path], sampling=sampling)
        for i, path in enumerate((clip_path, other_path)):
            alone = processor(videos=path, sampling=sampling)
            assert torch.equal(batch["pixel_values"][i], alone["pixel_values"][0])
            assert torch.equal(batch["visible_indices"][i], alone["visible_indices"][0])


def test_arrays_frames_and_pil_images_agree():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (5, 60, 80, 3), dtype=np.uint8)
    processor = OneVisionEncoderVideoProcessor(do_sample_frames=False, size=28, crop_size=28)
    expected = processor(videos=video)
    assert expected["pixel_values"].shape == (1, 3, 5, 28, 28)
    assert torch.equal(expected["visible_indices"], chunk_visible_indices(frame_positions(5), (2, 2)).unsqueeze(0))
    for same in (
        list(video),
        [Image.fromarray(frame) for frame in video],
        torch.from_numpy(video),
        torch.from_numpy(video).permute(0, 3, 1, 2),  # [T, C, H, W]
    ):
        torch.testing.assert_close(processor(videos=same)["pixel_values"], expected["pixel_values"], atol=0, rtol=0)
    batch = processor(videos=np.stack([video, video[::-1]]))
    assert batch["pixel_values"].shape == (2, 3, 5, 28, 28)
    assert torch.equal(batch["pixel_values"][1], expected["pixel_values"][0].flip(1))
    as_lists = processor(videos=[list(video), list(video)], return_tensors=None)["pixel_values"]
    assert isinstance(as_lists, list) and isinstance(as_lists[0], np.ndarray)


def test_num_frames_fps_and_frame_range_on_files(clip_path):
    processor = OneVisionEncoderVideoProcessor()
    four = processor(videos=clip_path, num_frames=4, return_metadata=True)
    assert four["pixel_values"].shape[2] == 4
    assert four["video_metadata"][0].frames_indices == [0, 13, 26, 39]
    five_per_second = processor(videos=clip_path, fps=5, return_metadata=True)  # 40 frames at 25 fps: 1.6 s
    assert five_per_second["video_metadata"][0].frames_indices == [0, 5, 11, 16, 22, 27, 33, 39]
    clip = processor(videos=clip_path, num_frames=4, frame_range=(10, 20), return_metadata=True)
    assert clip["video_metadata"][0].frames_indices == [10, 13, 16, 19]
    every = processor(videos=clip_path, do_sample_frames=False, frame_range=(0, 6))
    assert every["pixel_values"].shape[2] == 6
    assert processor(videos=clip_path, do_sample_frames=False)["pixel_values"].shape[2] == NUM_FRAMES
    with pytest.raises(ValueError, match="80 frames do not fit the model's 64-frame grid"):
        processor(videos=clip_path, num_frames=80)


def test_read_video_frames(clip_path):
    import onevision_encoder.codec as codec

    assert codec.read_video_frames is read_video_frames
    read = read_video_frames(clip_path, num_frames=8)
    assert read.frames.shape == (8, 224, 320, 3) and read.frames.dtype == np.uint8
    every = read_video_frames(clip_path)
    assert every.frame_ids.tolist() == list(range(NUM_FRAMES))
    assert all(np.array_equal(read.frames[i], every.frames[j]) for i, j in enumerate(read.frame_ids))
    clip = read_video_frames(clip_path, num_frames=3, frame_range=(30, 40))
    assert clip.frame_ids.tolist() == [30, 34, 39]
    assert read_video_frames(clip_path, fps=2.5).frame_ids.tolist() == [0, 13, 26, 39]  # int(1.6 s * 2.5) = 4
    assert (read.info.num_frames, read.info.fps) == (NUM_FRAMES, 25.0)
    with pytest.raises(ValueError, match=r"moving\.mp4: frame range 30:50 is not a clip"):
        read_video_frames(clip_path, num_frames=3, frame_range=(30, 50))
    with pytest.raises(ValueError, match="exclusive"):
        read_video_frames(clip_path, num_frames=3, fps=2)
    with pytest.raises(ValueError, match=r"moving\.mp4: frame range 30:20 is not a clip"):
        read_video_frames(clip_path, frame_range=(30, 20))


def test_bad_inputs_are_named(tmp_path, clip_path):
    processor = OneVisionEncoderVideoProcessor()
    with pytest.raises(VideoNotFoundError, match=r"missing\.mp4: no such file"):
        processor(videos=tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    for sampling in ("uniform", "codec"):
        with pytest.raises(NotAVideoError, match=r"notes\.mp4: cannot be opened as a video"):
            processor(videos=text, sampling=sampling)
    clip = make_clip("moving_object", num_frames=24, size=(112, 160), object_size=32)
    whole = write_stream(tmp_path / "whole.mkv", clip.frames, "ffv1", {})
    cut = cut_after(whole, tmp_path / "cut.mkv", 12)
    with pytest.raises(CorruptVideoError, match=r"cut\.mkv: .* the file is truncated"):
        processor(videos=cut)
    with pytest.raises(ValueError, match=r"a video array must be \[T, H, W, C\]"):
        processor(videos=np.zeros((2, 3, 4, 5, 6, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="a video has no frames"):
        processor(videos=[[]])
    with pytest.raises(ValueError, match="pass the file's path"):
        processor(videos=np.zeros((4, 32, 32, 3), dtype=np.uint8), sampling="codec")
    with pytest.raises(ValueError, match="cannot sample 80 frames from a video of 4"):
        processor(videos=np.zeros((4, 32, 32, 3), dtype=np.uint8), num_frames=80)
    with pytest.raises(ValueError, match="sampling must be one of"):
        processor(videos=clip_path, sampling="random")
    with pytest.raises(TypeError, match=r"unexpected arguments: \['num_frame'\]"):
        processor(videos=clip_path, num_frame=4)
    with pytest.raises(ValueError, match="num_patches must be an integer"):
        processor(videos=clip_path, sampling="codec", num_patches=20.5)


def test_save_load_and_auto_video_processor(tmp_path, clip_path):
    processor = OneVisionEncoderVideoProcessor(num_frames=4, size=112, crop_size=112)
    saved = processor.save_pretrained(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in map(str, saved)] == ["video_preprocessor_config.json"]
    stored = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert stored["video_processor_type"] == "OneVisionEncoderVideoProcessor" and stored["num_frames"] == 4
    tiny_config().save_pretrained(tmp_path)
    loaded = AutoVideoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, OneVisionEncoderVideoProcessor)
    assert torch.equal(loaded(videos=clip_path)["pixel_values"], processor(videos=clip_path)["pixel_values"])


def test_without_torchvision_the_video_processor_says_what_to_install():
    script = (
        "import sys\n"
        "sys.modules['torchvision'] = None\n"
        "import onevision_encoder\n"
        "from transformers import AutoImageProcessor\n"  # registration still works without torchvision
        "import onevision_encoder.model\n"
        "try:\n"
        "    onevision_encoder.OneVisionEncoderVideoProcessor\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "needs torchvision" in result.stdout and "pip install torchvision" in result.stdout


def test_the_codec_package_imports_neither_transformers_nor_torchvision():
    script = (
        "import sys, onevision_encoder.codec\n"
        "onevision_encoder.codec.read_video_frames\n"
        "print(sorted(m for m in ('transformers', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def readme_block(heading: str) -> str:
    """The first Python code block after ``heading`` in docs/model.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    section = text[text.index(f"\n{heading}\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_readme_model_example_runs_as_printed(tmp_path, monkeypatch):
    code = readme_block("## Images, chunks and codec patches")
    torch.manual_seed(0)
    OneVisionEncoderModel(tiny_config()).save_pretrained(tmp_path / "onevision-encoder-large")
    write_clip(tmp_path / "video.mp4", make_clip("moving_object", num_frames=NUM_FRAMES, size=(224, 320)))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "docs/model.md", "exec"), names)
    assert names["pixels"].shape == (1, 3, 448, 448)
    assert names["native"].shape == (1, 3, 378, 504)
    assert names["features"].shape == (1, 128)
    assert names["chunk"]["pixel_values"].shape == (1, 3, 8, 224, 224)
    assert names["codec"]["visible_indices"].shape == (1, 2048)
    assert names["tokens"].shape == (1, 2048, 128) and names["tokens"].dtype == torch.bfloat16
