"""A newcomer's path from the demo to their own data: what the demo leaves behind, and the first mistakes
(an image for a video, a video for a list, a file for a folder, a missing model folder, overlapping probe
lists) answered in one line; progress in logs; data written under the chosen output only."""

import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from onevision_encoder.codec import ImageNotVideoError, NotAVideoError, select_patches
from onevision_encoder.common.progress import ProgressLines
from onevision_encoder.training import load_config, train
from onevision_encoder.training.synthetic import SYNTHETIC_FOLDER, synthetic_dataset
from onevision_encoder.video.synthetic import make_clip, write_clip

ONEVISION = Path(sys.executable).with_name("onevision")
REPO = Path(__file__).resolve().parents[1]


def onevision(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [str(ONEVISION), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Two short clips, a photo, a JPEG named .mp4 and a clip named .jpg."""
    root = tmp_path_factory.mktemp("media")
    clip = write_clip(root / "walk.mp4", make_clip("moving_object", num_frames=24, size=(96, 128)))
    other = write_clip(root / "pan.mp4", make_clip("panning", num_frames=24, size=(96, 128)))
    pixels = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / "photo.jpg")
    Image.fromarray(pixels).save(root / "photo.png")
    shutil.copy(root / "photo.jpg", root / "still-named-as-video.mp4")
    shutil.copy(clip, root / "video-named-as-photo.jpg")
    return root, clip, other


# 1. The demo leaves a model to use, and says what to run next.


def test_the_demo_saves_its_model_and_its_next_commands_run_as_printed(tmp_path):
    result = onevision("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "onevision-demo" / "tiny-model"
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    assert "random" in (model / "README.md").read_text().lower()
    assert json.loads((model / "config.json").read_text())["random_weights"] is True
    lines = result.stdout.splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("next"))
    commands = [line.strip() for line in lines[start + 1 :] if line.strip().startswith("onevision ")]
    assert [command.split()[1] for command in commands] == ["viz", "encode"]
    assert "--model onevision-demo/tiny-model" in commands[1]
    for command in commands:
        done = onevision(*shlex.split(command)[1:], cwd=tmp_path)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    features = load_file(tmp_path / "onevision-demo" / "my-features.safetensors")
    assert features[next(name for name in features if name.endswith(".features"))].shape[-1] == 192


def test_the_demo_never_replaces_a_model_folder_of_yours(tmp_path):
    mine = tmp_path / "onevision-demo" / "tiny-model"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text('{"hidden_size": 1024}')
    result = onevision("demo", cwd=tmp_path)
    assert result.returncode == 2 and "is not the demo's model: not replacing it" in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["config.json"]


# 2. An image given to a video command is refused as an image, whatever its name says.


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "still-named-as-video.mp4"])
def test_an_image_is_not_selected_as_a_video(media, name):
    root, _, _ = media
    with pytest.raises(ImageNotVideoError) as caught:
        select_patches(root / name)
    assert isinstance(caught.value, NotAVideoError)
    message = str(caught.value)
    assert message.startswith(f"{root / name}: is an image") and "onevision encode" in message


def test_a_video_named_as_a_picture_is_a_video(media):
    root, _, _ = media
    assert select_patches(root / "video-named-as-photo.jpg").num_patches == 2048


def test_select_and_viz_refuse_an_image_in_one_line(media, tmp_path):
    root, _, _ = media
    for command in (["select", root / "photo.jpg", "--out", tmp_path / "sel"], ["viz", root / "photo.jpg"]):
        if command[0] == "viz":
            command += ["--out", tmp_path / "photo-viz.png"]
        result = onevision(*command)
        assert result.returncode == 1
        (line,) = error_lines(result.stderr)
        assert line.startswith(f"error: {root / 'photo.jpg'}: is an image") and "onevision encode" in line
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "sel").exists() or not any((tmp_path / "sel").iterdir())


def test_preprocess_records_an_image_in_its_list_and_goes_on(media, tmp_path):
    root, clip, _ = media
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clip}\n{root / 'photo.jpg'}\n")
    result = onevision("preprocess", listing, "--out", tmp_path / "pre")
    assert result.returncode == 1
    (failure,) = [json.loads(line) for line in (tmp_path / "pre" / "failures.jsonl").read_text().splitlines()]
    assert failure["path"] == str(root / "photo.jpg") and failure["error"] == "ImageNotVideoError"
    assert "is an image" in failure["message"] and (tmp_path / "pre" / "walk.mp4" / "meta.json").is_file()


# 3. A video where a list is expected just works; a file where a folder is expected is a usage error.


def test_preprocess_takes_a_single_video(media, tmp_path):
    _, clip, _ = media
    result = onevision("preprocess", clip, "--out", tmp_path / "pre")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pre" / "walk.mp4" / "meta.json").is_file()


def test_a_binary_file_is_no_list(tmp_path):
    blob = tmp_path / "data.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    result = onevision("preprocess", blob, "--out", tmp_path / "pre")
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: {blob}: not a list file") and "utf-8" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["select", "missing.mp4"],
        ["preprocess", "missing/"],
        ["encode", "missing.mp4", "--model", "missing-model"],
        ["probe", "--train", "missing.csv", "--val", "missing.csv", "--model", "m"],
        ["train", "--config", "missing.yaml"],
        ["lmm-train", "--config", "missing.yaml"],
        ["demo"],
    ],
)
def test_a_file_where_an_output_folder_is_expected_is_a_usage_error(tmp_path, command):
    (tmp_path / "taken").write_text("a user's file")
    result = onevision(*command, "--out", "taken", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "argument --out: taken is a file, not a folder" in result.stderr.splitlines()[-1]
    assert (tmp_path / "taken").read_text() == "a user's file"


# 4. A model path that is not there is said to be missing before the Hub is mentioned.


def test_a_missing_model_folder_is_named_before_the_hub(media, tmp_path):
    _, clip, _ = media
    (tmp_path / "runs").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_")) and "PROXY" not in k}
    with socket.socket() as closed:  # bound, never listening: a Hub that cannot be reached
        closed.bind(("127.0.0.1", 0))
        env |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed.getsockname()[1]}", "HF_HOME": str(tmp_path / "home")}
        result = onevision("encode", clip, "--model", "runs/my-model", "--out", "f.npz", cwd=tmp_path, env=env)
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert line.startswith("error: runs/my-model: no such local folder (runs/ holds no my-model)")
    assert "hub id" in line and line.index("no such local folder") < line.index("hub")


# 5. Batch commands report progress in plain lines where stderr is no terminal.


def test_progress_lines_come_at_the_interval_and_at_the_end():
    now = [100.0]
    stream = io.StringIO()
    with ProgressLines(10, "encode 0/1", "input", stream, interval=30, clock=lambda: now[0]) as progress:
        for _ in range(4):
            now[0] += 10
            progress.update()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "encode 0/1: 3/10 inputs (30%), 0.10 inputs/s, ETA 1m10s",
        "encode 0/1: 4/10 inputs (40%), 0.10 inputs/s, ETA 1m00s",
    ]


def test_batch_commands_print_progress_into_logs(media, tmp_path, parity_dir):
    _, clip, other = media
    videos = tmp_path / "videos"
    videos.mkdir()
    for source in (clip, other):
        shutil.copy(source, videos / source.name)
    preprocess = onevision("preprocess", videos, "--out", tmp_path / "pre")
    assert preprocess.returncode == 0, preprocess.stderr
    assert "preprocess 0/1: 2/2 videos (100%)" in preprocess.stderr
    encode = onevision("encode", videos, "--model", parity_dir / "tiny", "--out", tmp_path / "features")
    assert encode.returncode == 0, encode.stderr
    assert "encode 0/1: 2/2 inputs (100%)" in encode.stderr


# 6. The probe refuses to validate on what it trains on.


def test_probe_refuses_overlapping_train_and_val(media, tmp_path):
    _, clip, other = media
    (tmp_path / "train.csv").write_text(f"{clip},walk\n{other},pan\n")
    (tmp_path / "val.csv").write_text(f"{other},pan\n")
    lists = ["--train", tmp_path / "train.csv", "--val", tmp_path / "val.csv"]
    result = onevision("probe", *lists, "--model", "m", "--out", tmp_path / "probe")
    assert result.returncode == 2
    message = result.stderr.splitlines()[-1]
    assert "--train and --val share 1 clip" in message and str(other) in message
    assert not (tmp_path / "probe").exists()


# 7. Generated data goes under the run's folder, not beside the config.


def test_the_tiny_config_generates_its_data_inside_the_run(tmp_path):
    configs = tmp_path / "clone" / "configs"
    configs.mkdir(parents=True)
    shutil.copy(REPO / "configs" / "tiny-cpu.yaml", configs / "tiny-cpu.yaml")
    small = {"num_classes": 2, "images": 4, "ocr": 2, "videos": 2, "video_frames": 16}
    config = load_config(configs / "tiny-cpu.yaml", {"data.synthetic": small})
    for head in config.heads.values():
        head.num_classes, head.batch_size = 2, 2
    train(config, tmp_path / "run", max_steps=1)
    assert sorted(p.name for p in (tmp_path / "clone").iterdir()) == ["configs"]
    manifest = tmp_path / "run" / "synthetic-data" / "manifest.jsonl"
    assert len(manifest.read_text().splitlines()) == 8


# 8. No "torchvision backend not available" where torchvision is installed.


def test_loading_the_image_processor_warns_of_no_missing_backend(tmp_path, parity_dir):
    pytest.importorskip("torchvision")
    folder = tmp_path / "model"
    shutil.copytree(parity_dir / "tiny", folder)
    script = (
        "from onevision_encoder import OneVisionEncoderImageProcessor\n"
        "from transformers import AutoImageProcessor\n"
        f"OneVisionEncoderImageProcessor().save_pretrained({str(folder)!r})\n"
        f"print(type(AutoImageProcessor.from_pretrained({str(folder)!r})).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["OneVisionEncoderImageProcessor"], done.stderr
    assert "not available" not in done.stderr, done.stderr


def test_a_run_folder_s_synthetic_set_is_remade_for_other_settings_and_never_over_a_user_s_folder(tmp_path):
    small = {"num_classes": 2, "images": 2, "ocr": 0, "videos": 1, "video_frames": 8}
    manifest = synthetic_dataset(tmp_path / "run" / SYNTHETIC_FOLDER, small)
    assert len(manifest.read_text().splitlines()) == 3
    assert synthetic_dataset(manifest.parent, {**small, "images": 4}) == manifest
    assert len(manifest.read_text().splitlines()) == 5
    (manifest.parent / "media" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt, which was not generated there"):
        synthetic_dataset(manifest.parent, small)
    assert (manifest.parent / "media" / "notes.txt").read_text() == "mine"
    theirs = tmp_path / "theirs" / SYNTHETIC_FOLDER
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no synthetic set of ours"):
        synthetic_dataset(theirs, small)
    assert (theirs / "notes.txt").read_text() == "mine"


def test_encode_auto_encodes_a_picture_named_as_a_video_as_the_picture_it_is(media, tmp_path, parity_dir):
    root, _, _ = media
    inputs = [root / "photo.jpg", root / "still-named-as-video.mp4"]
    result = onevision("encode", *inputs, "--model", parity_dir / "tiny", "--out", tmp_path / "f.safetensors")
    assert result.returncode == 0, result.stderr
    features = load_file(tmp_path / "f.safetensors")
    assert np.array_equal(features["still-named-as-video.mp4.features"], features["photo.jpg.features"])
