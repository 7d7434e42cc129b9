"""``onevision encode`` at dataset scale: feature folders in parts, resume, shards, failures, bfloat16,
native-resolution and EXIF-rotated photos, and one reader for encode's folders and the probe's cache."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from onevision_encoder.cli.main import main
from onevision_encoder.common.distributed import resolve_device
from onevision_encoder.evaluation import Clip, FeatureSpec, FeatureStore, cached_features
from onevision_encoder.jobs import features as features_module
from onevision_encoder.jobs.feature_store import FailedRowError
from onevision_encoder.video.synthetic import make_clip, write_clip

NAMES = ["a.png", "b.png", "bad.mp4", "c.png", "d.png", "sub/e.png", "sub/walk.mp4"]  # row order (sorted paths)


def picture(path: Path, seed: int, size=(56, 70)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Six pictures and a short clip, a corrupt video and a text file, in a folder and a subfolder."""
    root = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(["a.png", "b.png", "c.png", "d.png", "sub/e.png"]):
        picture(root / name, seed)
    write_clip(root / "sub" / "walk.mp4", make_clip("moving_object", num_frames=16, size=(64, 64)))
    (root / "bad.mp4").write_bytes(b"not a video at all" * 50)
    (root / "notes.txt").write_text("not media")
    return root


def encode(*argv) -> int:
    return main(["encode", *map(str, argv)])


def model_args(parity_dir, *extra) -> list:
    return ["--model", parity_dir / "tiny", "--device", "cpu", "--mode", "auto", *extra]


@pytest.fixture(scope="module")
def reference(data, parity_dir, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """One uninterrupted run into a folder (parts of 2 inputs), and the same inputs into one file."""
    out = tmp_path_factory.mktemp("reference") / "features"
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 1  # bad.mp4 failed
    single = out.with_name("single.safetensors")
    assert encode(data, *model_args(parity_dir), "--out", single) == 1
    return out, load_file(single)


def part_tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {path.name: load_file(path) for path in sorted(folder.glob("part-*.safetensors"))}


def test_a_folder_becomes_parts_an_index_and_failures(data, reference, capsys):
    out, single = reference
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-0000{i}.safetensors" for i in range(4)]
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "onevision-features/1" and index["rows_per_part"] == 2
    assert [(e["name"], e["part"], e["row"]) for e in index["inputs"]] == [(n, r // 2, r) for r, n in enumerate(NAMES)]
    assert index["inputs"][2]["path"] == str(data / "bad.mp4")
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["name"], f["error"]) for f in failures] == [("bad.mp4", "NotAVideoError")]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["encoded"], summary["failed"], summary["ignored"]) == (7, 6, 1, 1)
    assert (summary["parts"], summary["parts_done"], summary["parts_written"]) == (4, 4, 4)

    store = FeatureStore.open(out)  # the reader of the probe's cache
    assert len(store) == 7 and store.shape == (7, 1024, 128)
    for name in NAMES:
        if name == "bad.mp4":
            with pytest.raises(FailedRowError, match=r"bad\.mp4: not encoded \(NotAVideoError"):
                store.row(name)
            continue
        row = store.row(name)
        assert set(row) == set(k.rsplit(".", 1)[1] for k in single if k.startswith(f"{name}."))
        for key, value in row.items():
            torch.testing.assert_close(value, single[f"{name}.{key}"], rtol=0, atol=1e-5)
    assert store.row("sub/walk.mp4")["features"].shape == (2048, 128)  # codec mode for the video
    torch.testing.assert_close(store[[3, 0]], torch.stack([single["c.png.features"], single["a.png.features"]]))
    with pytest.raises(ValueError, match="differ in shape"):
        store[[0, 6]]


def test_progress_is_a_line_per_part_in_logs_and_a_rerun_skips_finished_parts(data, reference, parity_dir, capsys):
    out, _ = reference
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    capsys.readouterr()
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 1  # its failure stays
    printed = capsys.readouterr()
    assert "parts 0 written, 4 skipped, 0 not done; inputs 6 encoded, 1 failed" in printed.out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == written

    fresh = out.with_name("logged")
    assert encode(data / "sub", *model_args(parity_dir, "--clips-per-part", "1"), "--out", fresh) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("part ")]
    assert [line.split(" (")[0] for line in lines] == ["part 0 done", "part 1 done"]  # stderr is no terminal here


def test_an_interrupted_run_resumes_at_the_missing_parts(data, reference, parity_dir, tmp_path, monkeypatch):
    out = tmp_path / "features"
    real, calls = features_module.encode_rows, []

    def interrupted_at_the_third_part(job, rows, *callbacks):
        calls.append(list(rows))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) midway through a part
        return real(job, rows, *callbacks)

    monkeypatch.setattr(features_module, "encode_rows", interrupted_at_the_third_part)
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 130
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.safetensors", "part-00001.safetensors"]
    assert not list(out.glob(".part-*"))  # the unfinished part left nothing behind
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and (summary["parts_done"], summary["not_done"]) == (2, 3)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    leftover = out / ".part-00002.safetensors.k1lled.tmp.safetensors"
    leftover.write_bytes(b"half a part")  # what a SIGKILL during the write would leave

    def counted(job, rows, *callbacks):
        calls.append(list(rows))
        return real(job, rows, *callbacks)

    calls.clear()
    monkeypatch.setattr(features_module, "encode_rows", counted)
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 1
    assert calls == [[4, 5], [6]]  # only the missing parts
    assert not leftover.exists()
    assert {name: out.joinpath(name).stat().st_mtime_ns for name in kept} == kept
    expected = part_tensors(reference[0])
    for name, tensors in part_tensors(out).items():
        assert tensors.keys() == expected[name].keys()
        for key, value in tensors.items():
            torch.testing.assert_close(value, expected[name][key], rtol=0, atol=1e-5)
    assert (out / "failures.jsonl").read_text() == (reference[0] / "failures.jsonl").read_text()


def test_a_killed_run_stops_cleanly_and_a_rerun_finishes_it(parity_dir, tmp_path):
    videos = tmp_path / "videos"
    for number in range(8):
        write_clip(videos / f"{number}.mp4", make_clip("moving_object", num_frames=16, size=(64, 64)))
    out = tmp_path / "features"
    options = [*model_args(parity_dir, "--clips-per-part", "1"), "--mode", "chunk", "--out", out]
    argv = [Path(sys.executable).with_name("onevision"), "encode", videos, *options]
    run = subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "part-00001.safetensors").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)  # as a scheduler stops a job
    printed, _ = run.communicate(timeout=60)
    assert run.returncode == 130 and printed.startswith("interrupted: ")
    written = sorted(p.name for p in out.glob("part-*"))
    assert 2 <= len(written) < 8 and not list(out.glob(".part-*"))
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    assert encode(*argv[2:]) == 0
    store = FeatureStore.open(out)
    assert not store.missing_parts() and store[:].shape == (8, 2048, 128)


def test_shards_split_the_parts_and_the_last_completes_the_folder(data, reference, parity_dir, tmp_path, monkeypatch):
    out = tmp_path / "features"
    argv = [data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out]
    assert encode(*argv, "--shard", "1/2") == 1  # parts 1 and 3: bad.mp4 (failed), c.png, sub/walk.mp4
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00001.safetensors", "part-00003.safetensors"]
    assert not (out / "summary.json").exists()  # incomplete: only the shard's own summary
    shard = json.loads((out / "summary.shard-1-of-2.json").read_text())
    assert (shard["encoded"], shard["failed"]) == (2, 1)
    monkeypatch.setenv("RANK", "0")  # as torchrun starts it
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert encode(*argv) == 0  # parts 0 and 2: four pictures
    assert json.loads((out / "summary.shard-0-of-2.json").read_text())["encoded"] == 4
    whole = json.loads((out / "summary.json").read_text())
    assert (whole["inputs"], whole["parts_done"], whole["encoded"], whole["failed"]) == (7, 4, 6, 1)
    assert (out / "failures.jsonl").read_text() == (reference[0] / "failures.jsonl").read_text()
    expected = part_tensors(reference[0])
    for name, tensors in part_tensors(out).items():
        for key, value in tensors.items():
            torch.testing.assert_close(value, expected[name][key], rtol=0, atol=1e-5)


def test_a_folder_of_another_job_is_refused_naming_the_difference(data, reference, parity_dir, capsys):
    out, _ = reference
    index = (out / "index.json").read_text()
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2", "--pooled"), "--out", out) == 2
    assert "holds the features of another job (pooled false there, true now)" in capsys.readouterr().err
    assert encode(data / "sub", *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 2
    assert "inputs: 2 new (e.g. " in capsys.readouterr().err
    assert (out / "index.json").read_text() == index
    other = out.with_name("other-files")
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert encode(data, *model_args(parity_dir), "--out", other) == 2
    assert "holds other files and no index.json" in capsys.readouterr().err


def test_weights_of_the_same_size_and_time_saved_over_the_model_are_another_model(data, parity_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(parity_dir / "tiny" / name, model / name)
    out = tmp_path / "features"
    argv = [data / "a.png", data / "b.png", "--model", model, "--device", "cpu", "--out", out]
    assert encode(*argv) == 0
    first = FeatureStore.open(out)[:]
    weights = model / "model.safetensors"
    before = weights.stat()
    with safe_open(weights, "pt") as handle:
        metadata = handle.metadata()
    retrained = {name: value * 1.5 for name, value in load_file(weights).items()}  # retrained: same shapes, dtypes
    save_file(retrained, weights, metadata=metadata)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    capsys.readouterr()
    assert encode(*argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "model_sha256" in lines[0] and "add --overwrite" in lines[0], lines
    assert torch.equal(FeatureStore.open(out)[:], first)  # nothing replaced
    assert encode(*argv, "--overwrite") == 0
    single = tmp_path / "retrained.safetensors"
    assert encode(*argv[:-1], single) == 0
    torch.testing.assert_close(FeatureStore.open(out).row("b.png")["features"], load_file(single)["b.png.features"])
    assert not torch.allclose(FeatureStore.open(out)[:], first)


def test_an_input_changed_since_it_was_encoded_stops_the_rerun_and_overwrite_encodes_its_part(
    parity_dir, tmp_path, capsys
):
    inputs = tmp_path / "inputs"
    for seed, name in enumerate(["a.png", "b.png", "c.png"]):
        picture(inputs / name, seed)
    out = tmp_path / "features"
    argv = [inputs, *model_args(parity_dir, "--clips-per-part", "1"), "--out", out]
    assert encode(*argv) == 0
    (out / "notes.txt").write_text("mine")  # a file of the user's in the folder: never touched
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    os.utime(inputs / "a.png", ns=(1, 1))  # touched (or copied): another time, the same content
    assert encode(*argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == written
    picture(inputs / "b.png", 99)  # another picture under the same name
    capsys.readouterr()
    assert encode(*argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{inputs / 'b.png'} changed since it was encoded" in lines[0], lines
    assert "add --overwrite" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == written
    assert encode(*argv, "--overwrite") == 0
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert [name for name in sorted(now) if now[name] != written[name]] == ["part-00001.safetensors"]
    single = tmp_path / "b.safetensors"
    assert encode(inputs / "b.png", *model_args(parity_dir), "--out", single) == 0
    torch.testing.assert_close(FeatureStore.open(out).row("b.png")["features"], load_file(single)["b.png.features"])
    assert (out / "notes.txt").read_text() == "mine"


def test_parts_of_another_package_version_are_reused_and_reported(data, parity_dir, tmp_path, capsys, monkeypatch):
    import onevision_encoder

    out = tmp_path / "features"
    argv = [data / "a.png", data / "b.png", *model_args(parity_dir, "--clips-per-part", "1"), "--out", out]
    import importlib.metadata

    installed = importlib.metadata.version

    with monkeypatch.context() as earlier:  # an earlier release of this package, as its metadata says
        earlier.setattr(
            importlib.metadata, "version", lambda name: "0.0.1" if name == "onevision-encoder" else installed(name)
        )
        assert encode(*argv) == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    capsys.readouterr()
    assert encode(*argv) == 0
    printed = capsys.readouterr()
    assert f"2 parts were written by onevision-encoder 0.0.1, this is {onevision_encoder.__version__}" in printed.err
    assert "parts 0 written, 2 skipped" in printed.out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == written


def test_a_failure_is_recorded_as_it_happens(data, parity_dir, tmp_path, monkeypatch):
    out = tmp_path / "features"
    real_sample, seen = features_module.EncodeJob.sample, []

    def killed_after_the_failure(job, path, name, processor):
        if name == "c.png":  # the input after bad.mp4, in the same part: nothing of that part is written yet
            seen.append((out / "failures.jsonl").read_text() if (out / "failures.jsonl").exists() else "")
            raise KeyboardInterrupt
        return real_sample(job, path, name, processor)

    monkeypatch.setattr(features_module.EncodeJob, "sample", killed_after_the_failure)
    assert encode(data, *model_args(parity_dir, "--clips-per-part", "2"), "--out", out) == 130
    for text in (seen[0], (out / "failures.jsonl").read_text()):  # as it happened, and after the interruption
        assert [(json.loads(line)["name"], json.loads(line)["error"]) for line in text.splitlines()] == [
            ("bad.mp4", "NotAVideoError")
        ]


def test_a_hub_id_is_identified_by_the_content_of_its_cached_files(parity_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from onevision_encoder.jobs.feature_store import model_identity

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(parity_dir / "tiny" / name, repo / "snapshots" / revision / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    local = model_identity(str(parity_dir / "tiny"))
    assert model_identity("someone/tiny") == local  # the same files, reached through the cache
    weights = repo / "snapshots" / revision / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert model_identity("someone/tiny") != local


def test_a_list_file_names_its_inputs(parity_dir, tmp_path, capsys):
    picture(tmp_path / "p" / "a.png", 0)
    picture(tmp_path / "p" / "sub" / "e.png", 1)
    listing = tmp_path / "list.txt"
    listing.write_text("# relative to the list\np/sub/e.png\np/a.png\np/missing.png\n")
    out = tmp_path / "features"
    assert encode(listing, *model_args(parity_dir), "--out", out) == 1
    store = FeatureStore.open(out)
    assert [name for _, name in store.inputs] == ["a.png", "missing.png", "sub/e.png"]
    assert [(f["name"], f["error"]) for f in store.failures()] == [("missing.png", "ValueError")]
    assert f"error: {tmp_path / 'p' / 'missing.png'}: cannot be read as an image" in capsys.readouterr().err
    assert store.row("sub/e.png")["features"].shape == (1024, 128)


def test_bfloat16_is_stored_as_bfloat16(data, parity_dir, tmp_path, capsys):
    pictures = [data / "a.png", data / "b.png"]
    out = tmp_path / "features"
    assert encode(*pictures, *model_args(parity_dir, "--dtype", "bfloat16"), "--out", out) == 0
    assert FeatureStore.open(out)[:].dtype == torch.bfloat16
    single = tmp_path / "f.safetensors"
    assert encode(*pictures, *model_args(parity_dir, "--dtype", "bfloat16"), "--out", single) == 0
    assert load_file(single)["a.png.features"].dtype == torch.bfloat16
    assert torch.equal(load_file(single)["a.png.features"], FeatureStore.open(out).row("a.png")["features"])
    assert encode(*pictures, *model_args(parity_dir, "--dtype", "bfloat16"), "--out", tmp_path / "f.npz") == 2
    assert "cannot hold bfloat16" in capsys.readouterr().err


def test_photos_are_upright_and_native_resolution_keeps_their_shape(parity_dir, tmp_path):
    photos = tmp_path / "photos"
    sideways = picture(tmp_path / "raw.png", 7, size=(42, 84))  # stored 84 wide, 42 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    photos.mkdir()
    Image.open(sideways).save(photos / "phone.jpg", exif=exif, quality=95)
    with Image.open(photos / "phone.jpg") as photo:
        ImageOps.exif_transpose(photo).save(photos / "upright.png")  # the very pixels a viewer shows
    out = tmp_path / "native"
    assert encode(photos, *model_args(parity_dir), "--mode", "image", "--native", "--out", out) == 0
    store = FeatureStore.open(out)
    phone, upright = store.row("phone.jpg"), store.row("upright.png")
    hp, wp = (int(phone["positions_thw"][:, axis].max()) + 1 for axis in (1, 2))
    assert hp > wp  # 84 high, 42 wide once upright: the native grid is taller than wide
    assert phone["features"].shape == (hp * wp, 128)
    torch.testing.assert_close(phone["features"], upright["features"], rtol=0, atol=1e-5)
    assert encode(photos, *model_args(parity_dir), "--mode", "chunk", "--native", "--out", tmp_path / "x") == 2


def test_the_probe_cache_is_read_by_the_same_reader(data, parity_dir, tmp_path):
    clips = [Clip(data / "sub" / "walk.mp4", "walk"), Clip(data / "sub" / "walk.mp4", "walk", frame_range=(2, 12))]
    store, cached = cached_features(FeatureSpec(str(parity_dir / "tiny"), "chunk", frames=8), clips, tmp_path)
    assert not cached
    opened = FeatureStore.open(store.folder)
    assert [name for _, name in opened.inputs] == [clips[0].key(), clips[1].key()]
    assert torch.equal(opened[:], store[:]) and opened.shape == (2, 2048, 128)
    assert torch.equal(opened.row(clips[1].key())["features"], store[1])


def test_device_auto_is_this_process_gpu_else_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda:3"
    assert resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
