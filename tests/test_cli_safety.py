"""The command line never writes over its inputs, names outputs by the paths as given, takes folders in
``encode``, works with its defaults, and builds its help without the heavy libraries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.numpy import load_file, save_file

from onevision_encoder.cli.main import main
from onevision_encoder.cli.options import UsageError, refuse_outputs_over_inputs
from onevision_encoder.codec import CodecSelection
from onevision_encoder.video.synthetic import make_clip, write_clip

FAST = ["--frames", "8", "-k", "512"]  # a small selection: these tests are about files, not scores


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    path = write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", make_clip("moving_object", 16, size=(64, 80)))
    return path.read_bytes()


@pytest.fixture
def clip(tmp_path, clip_bytes) -> Path:
    """A small real video, fresh in each test's folder (a test may try to overwrite it)."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_bytes)
    return path


def image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def usage_error(capsys, argv) -> str:
    """Run ``onevision ARGV`` in this process; it must exit 2 with one ``onevision SUB: error:`` line."""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onevision {argv[0]}: error: "), lines
    return lines[0]


# 1. No output over an input.


def test_viz_documented_example_keeps_the_video(clip, tmp_path):
    original = clip.read_bytes()
    assert main(["viz", str(clip), "--out", str(tmp_path / "clip.png"), "--animation", "mp4", *FAST]) == 0
    assert clip.read_bytes() == original
    assert (tmp_path / "clip.png").stat().st_size > 0 and (tmp_path / "clip.anim.mp4").stat().st_size > 0


@pytest.mark.parametrize(("video", "out", "animation"), [("clip.anim.mp4", "clip.png", "mp4"), ("c.png", "c", "none")])
def test_viz_refuses_an_output_over_its_video(tmp_path, capsys, video, out, animation):
    video = tmp_path / video
    video.write_bytes(b"not decoded: the command stops before any work")
    line = usage_error(capsys, ["viz", video, "--out", tmp_path / out, "--animation", animation])
    assert str(video) in line and "would overwrite" in line
    assert video.read_bytes() == b"not decoded: the command stops before any work"
    assert [p.name for p in tmp_path.iterdir()] == [video.name]


def users_picture(path: Path) -> Path:
    """A picture or video of the user's, of the very format viz writes there (not one viz drew)."""
    if path.suffix == ".mp4":
        return write_clip(path, make_clip("still", 8, size=(32, 32)))
    Image.fromarray(np.full((24, 32, 3), 200, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("theirs", ["clip.png", "clip.anim.gif", "clip.anim.mp4"])
def test_viz_replaces_only_the_pictures_it_drew(clip, tmp_path, capsys, theirs):
    animation = "mp4" if theirs.endswith(".mp4") else "gif"
    argv = [str(a) for a in ["viz", clip, "--out", tmp_path / "clip.png", "--animation", animation, *FAST]]
    assert main(argv) == 0 and main(argv) == 0  # what viz drew, viz draws again
    for drawn in (tmp_path / "clip.png", tmp_path / f"clip.anim.{animation}"):
        drawn.unlink()
    users = users_picture(tmp_path / theirs)
    original = users.read_bytes()
    clip.write_bytes(b"not decoded: the command stops before any work")
    capsys.readouterr()
    line = usage_error(capsys, argv)
    assert f"{users} exists and was not written by onevision viz: not replacing it" in line
    assert users.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", theirs])


def test_select_refuses_a_folder_over_a_video(clip, tmp_path, capsys, monkeypatch):
    original = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    line = usage_error(capsys, ["select", "clip.mp4", "--out", ".", *FAST])  # OUT/clip.mp4/ is the video
    assert "the output clip.mp4 would overwrite the input clip.mp4" in line
    assert clip.read_bytes() == original


def test_an_output_folder_replacing_an_input_inside_it_is_refused(tmp_path):
    video = tmp_path / "out" / "clip.mp4" / "clip.mp4"
    refuse_outputs_over_inputs([(video, tmp_path / "elsewhere" / "clip.mp4")], folders=True)
    with pytest.raises(UsageError, match=r"output folder .* would replace the input .* inside it"):
        refuse_outputs_over_inputs([(video, tmp_path / "out" / "clip.mp4")], folders=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(UsageError, match="would overwrite"):  # links resolved
        refuse_outputs_over_inputs([(tmp_path / "data" / "a.mp4", tmp_path / "link" / "a.mp4")])


def test_encode_refuses_an_output_over_an_input(tmp_path, capsys):
    features = tmp_path / "feats.npz"
    features.write_bytes(b"keep")
    line = usage_error(capsys, ["encode", image(tmp_path / "a.png"), features, "--model", "m", "--out", features])
    assert f"the output {features} would overwrite the input {features}" in line
    assert features.read_bytes() == b"keep"


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_encode_replaces_only_a_features_file_it_wrote(tmp_path, capsys, parity_dir, suffix):
    out = tmp_path / f"features{suffix}"
    picture = image(tmp_path / "a.png")
    argv = ["encode", picture, "--model", parity_dir / "tiny", "--device", "cpu", "--out", out]
    assert main([str(a) for a in argv]) == 0 and main([str(a) for a in argv]) == 0  # its own file: replaced
    out.unlink()
    if suffix == ".npz":  # a file of the user's in that very format
        np.savez(out, features=np.zeros(3))
    else:
        save_file({"features": np.zeros(3)}, out)
    original = out.read_bytes()
    capsys.readouterr()
    for overwrite in ([], ["--overwrite"]):
        line = usage_error(capsys, ["encode", picture, "--model", "never-loaded", "--out", out, *overwrite])
        assert f"{out} exists and was not written by onevision encode: not replacing it" in line
        assert out.read_bytes() == original


def test_probe_refuses_results_over_its_lists(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"never decoded")
    (tmp_path / "train.csv").write_text("a.mp4,x\n")
    (tmp_path / "predictions.csv").write_text("a.mp4,x\n")  # the validation list, where the results go
    argv = ["probe", "--train", tmp_path / "train.csv", "--val", tmp_path / "predictions.csv"]
    line = usage_error(capsys, [*argv, "--model", "m", "--out", tmp_path])
    assert "predictions.csv would overwrite the input" in line
    assert (tmp_path / "predictions.csv").read_text() == "a.mp4,x\n"


def test_demo_refuses_an_output_over_its_video(tmp_path, capsys):
    video = tmp_path / "selection.png"
    video.write_bytes(b"keep")
    assert "would overwrite" in usage_error(capsys, ["demo", "--video", video, "--out", tmp_path])
    assert video.read_bytes() == b"keep"


# 2. Outputs are named by the path as given.


@pytest.fixture
def links(clip, tmp_path) -> list[Path]:
    (tmp_path / "links").mkdir()
    made = [tmp_path / "links" / name for name in ("a.mp4", "b.mp4")]
    for link in made:
        link.symlink_to(clip)
    return made


def test_select_two_links_to_one_video_are_two_selections(links, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["select", *(str(link.relative_to(tmp_path)) for link in links), "--out", "s", *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "s" / "links").iterdir()) == ["a.mp4", "b.mp4"]
    for name in ("a.mp4", "b.mp4"):
        assert CodecSelection.load(tmp_path / "s" / "links" / name).num_patches == 512


@pytest.mark.parametrize("command", ["select", "encode"])
def test_the_same_input_twice_is_a_usage_error(clip, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    out = ["--out", "s"] if command == "select" else ["--model", "m", "--out", "f.npz"]
    line = usage_error(capsys, [command, "clip.mp4", "./clip.mp4", *out])
    assert "given more than once" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def selections(out: Path) -> list[str]:
    """The selection folders under ``out``, by their names relative to it."""
    return sorted(str(meta.parent.relative_to(out)) for meta in out.rglob("meta.json"))


def test_select_names_each_output_by_its_path_as_given_and_its_frame_range(clip_bytes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.mp4").write_bytes(clip_bytes)
    assert main(["select", "a/clip.mp4", "--out", "sel", *FAST]) == 0
    assert main(["select", "b/clip.mp4", "--out", "sel", *FAST]) == 0  # another run, another input: its own folder
    for frames in ("0:8", "8:16"):
        assert main(["select", "./a/clip.mp4", "--frame-range", frames, "--out", "sel", *FAST]) == 0
    assert selections(tmp_path / "sel") == ["a/clip.mp4", "a/clip.mp4@0-8", "a/clip.mp4@8-16", "b/clip.mp4"]
    assert CodecSelection.load(tmp_path / "sel" / "a" / "clip.mp4@8-16").meta["frame_range"] == [8, 16]


def test_select_refuses_two_inputs_that_would_share_a_folder(clip_bytes, tmp_path, capsys, monkeypatch):
    outside = tmp_path / "outside.mp4"  # outside the working folder: named by its absolute path
    work = tmp_path / "work"
    inside = Path(str(outside).lstrip(os.sep))  # inside it, a file of that very name
    (work / inside).parent.mkdir(parents=True)
    for video in (outside, work / inside):
        video.write_bytes(clip_bytes)
    monkeypatch.chdir(work)
    line = usage_error(capsys, ["select", outside, inside, "--out", "sel", *FAST])
    assert f"{outside} and {inside} would both be written to {Path('sel') / inside}" in line
    assert not (work / "sel").exists()


# 3. select replaces only the folders it wrote, made from the same input and options.


def test_select_never_replaces_a_folder_holding_a_users_file(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["select", "clip.mp4", "--out", "sel", *FAST]) == 0
    folder = tmp_path / "sel" / "clip.mp4"
    written = {path.name: path.read_bytes() for path in folder.iterdir()}
    (folder / "notes.txt").write_text("mine")
    for overwrite in ([], ["--overwrite"]):  # the same run again, then with --overwrite: refused alike
        line = usage_error(capsys, ["select", "clip.mp4", "--out", "sel", *FAST, *overwrite])
        assert f"{Path('sel/clip.mp4')} holds files this tool did not write: notes.txt; move them" in line
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == {**written, "notes.txt": b"mine"}
    (folder / "notes.txt").unlink()
    assert main(["select", "clip.mp4", "--out", "sel", *FAST]) == 0  # its own folder, as it left it: replaced

    theirs = tmp_path / "theirs" / "clip.mp4"  # a folder of the user's where the selection would go
    theirs.mkdir(parents=True)
    (theirs / "plan.txt").write_text("mine")
    line = usage_error(capsys, ["select", "clip.mp4", "--out", "theirs", *FAST, "--overwrite"])
    assert "holds files this tool did not write: plan.txt" in line
    assert [path.name for path in theirs.iterdir()] == ["plan.txt"]


def test_select_replaces_a_selection_of_another_input_or_options_only_if_asked(clip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["select", "clip.mp4", "--out", "sel", *FAST]) == 0
    meta = tmp_path / "sel" / "clip.mp4" / "meta.json"
    before = meta.read_bytes()
    other_k = ["--frames", "8", "-k", "256"]
    line = usage_error(capsys, ["select", "clip.mp4", "--out", "sel", *other_k])
    assert f"{Path('sel/clip.mp4')} was made otherwise (num_patches 512 there, 256 now); add --overwrite" in line
    write_clip(clip, make_clip("panning", 16, size=(64, 80)))  # another video under the same name
    line = usage_error(capsys, ["select", "clip.mp4", "--out", "sel", *FAST])
    assert "(input changed: clip.mp4); add --overwrite" in line
    assert meta.read_bytes() == before
    assert main(["select", "clip.mp4", "--out", "sel", *other_k, "--overwrite"]) == 0
    assert CodecSelection.load(tmp_path / "sel" / "clip.mp4").num_patches == 256

    earlier = json.loads(meta.read_text())  # as the previous version wrote it: no record of what made it
    del earlier["made_by"]
    meta.write_text(json.dumps(earlier))
    line = usage_error(capsys, ["select", "clip.mp4", "--out", "sel", *other_k])
    assert "written by an earlier version of onevision, with no record of its input and options" in line
    assert main(["select", "clip.mp4", "--out", "sel", *other_k, "--overwrite"]) == 0
    assert "made_by" in json.loads(meta.read_text())


def test_saving_a_selection_over_a_folder_with_a_users_file_leaves_it_as_it_was(clip, tmp_path):
    """What guards a file added after the command's checks: the old folder is checked once moved aside."""
    from onevision_encoder.codec import select_patches
    from onevision_encoder.codec.selection_folder import FolderNotOursError

    selection = select_patches(clip, num_frames=8, num_patches=512)
    folder = selection.save(tmp_path / "sel")
    (folder / "notes.txt").write_text("mine")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    with pytest.raises(FolderNotOursError, match=f"{folder} holds files this tool did not write: notes.txt"):
        selection.save(folder)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "sel"]  # nothing left aside


# 4. encode takes folders.


def test_encode_a_folder_names_by_the_path_inside_it(clip, tmp_path, parity_dir):
    data = tmp_path / "data"
    image(data / "a.png")
    image(data / "sub" / "b.jpg", seed=1)
    (data / "c.png").symlink_to(data / "a.png")  # a link is one more input, named by the link
    (data / "notes.txt").write_text("not media")
    os.replace(clip, data / "sub" / "v.mp4")
    out = tmp_path / "f.safetensors"
    assert main(["encode", str(data), "--model", str(parity_dir / "tiny"), "--out", str(out)]) == 0
    arrays = load_file(out)
    assert {key.rsplit(".", 1)[0] for key in arrays} == {"a.png", "c.png", "sub/b.jpg", "sub/v.mp4"}
    np.testing.assert_array_equal(arrays["a.png.features"], arrays["c.png.features"])
    assert arrays["sub/v.mp4.features"].shape == (2048, 128)


def test_encode_refuses_two_inputs_of_one_name(tmp_path, capsys):
    first, second = image(tmp_path / "one" / "a.png"), image(tmp_path / "two" / "a.png")
    line = usage_error(capsys, ["encode", tmp_path / "one", tmp_path / "two", "--model", "m", "--out", "f.npz"])
    assert f"{first} and {second} would both be saved as a.png" in line
    assert "given more than once" in usage_error(
        capsys, ["encode", tmp_path / "one", first, "--model", "m", "--out", "f.npz"]
    )


# 5. concepts: defaults work, errors speak the command line.


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest")
    lines = [{"path": f"{i}.png", "head": "image"} for i in range(6)]
    for i in range(6):
        image(root / f"{i}.png", seed=i)
    write_clip(root / "v.mp4", make_clip("still", 8, size=(32, 32)))
    (root / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "mixed.jsonl").write_text((root / "train.jsonl").read_text() + '{"path": "v.mp4", "head": "video"}\n')
    return root / "train.jsonl"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16
    )
    transformers.CLIPVisionModel(config).save_pretrained(folder)
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_concepts_defaults_work_with_fewer_than_10_centres(manifest, teacher, tmp_path):
    out = tmp_path / "labelled.jsonl"
    argv = ["concepts", manifest, "--teacher", teacher, "--centres", "4", "--device", "cpu", "--out", out]
    assert main([str(a) for a in argv]) == 0
    assert [len(json.loads(line)["labels"]) for line in out.read_text().splitlines()] == [4] * 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--centres", "4", "--top-k", "5"], "--top-k 5 is more than --centres 4"),
        (["--centres", "7"], "cannot make 7 centres from 6 samples: use --centres 6 or fewer"),
        (["--centres", "2", "--head", "ocr"], "no sample of head ocr (--head)"),
        (["--centres", "2", "--centres-out", "c.np"], "--centres-out must end in .npy"),
        (["--centres", "2", "--out", "{dir}/x.npy", "--centres-out", "{dir}/x.npy"], "name the same file: "),
    ],
)
def test_concepts_usage_errors_name_the_options(manifest, tmp_path, capsys, options, message):
    options = [option.format(dir=tmp_path) for option in options]
    argv = ["concepts", manifest, "--teacher", "never-loaded", "--out", tmp_path / "o.jsonl", *options]
    assert message in usage_error(capsys, argv)
    assert list(tmp_path.iterdir()) == []


def test_concepts_mixed_manifest_says_which_option(manifest, tmp_path, capsys):
    argv = ["concepts", manifest.with_name("mixed.jsonl"), "--teacher", "never-loaded", "--centres", "2"]
    line = usage_error(capsys, [*argv, "--out", tmp_path / "o.jsonl"])
    assert "--head video, then --head image --head ocr" in line and "heads=" not in line


def test_concepts_refuses_to_overwrite_its_manifest(manifest, capsys):
    original = manifest.read_text()
    argv = ["concepts", manifest, "--teacher", "never-loaded", "--centres", "2", "--out", manifest]
    assert f"the output {manifest} would overwrite the input {manifest}" in usage_error(capsys, argv)
    assert manifest.read_text() == original


@pytest.mark.parametrize("option", ["--centres", "--top-k", "--frames", "--dim", "--batch-size", "--iterations"])
def test_concepts_numbers_below_1_are_usage_errors(manifest, capsys, option):
    argv = ["concepts", str(manifest), "--teacher", "t", "--centres", "2", "--out", "o.jsonl", option, "0"]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and f"{option}: must be >= 1, got 0" in capsys.readouterr().err


# 6. Help without the heavy libraries.

SUBCOMMANDS = ["select", "viz", "encode", "preprocess", "train", "concepts", "probe", "demo"]
HELP_WITHOUT_HEAVY_IMPORTS = f"""
import contextlib, io, sys
from onevision_encoder.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    for argv in [["--help"], *([name, "--help"] for name in {SUBCOMMANDS!r})]:
        try:
            main(argv)
        except SystemExit:
            pass
print(sorted(name for name in ("torch", "transformers", "cv2", "av") if name in sys.modules))
"""


def test_help_imports_no_heavy_library():
    """Deterministic stand-in for "help answers in under a second": importing torch alone takes seconds."""
    result = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_HEAVY_IMPORTS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_probe_help_states_the_store_default(capsys):
    from onevision_encoder.jobs.feature_store import CLIPS_PER_PART

    with pytest.raises(SystemExit):
        main(["probe", "--help"])
    printed = " ".join(capsys.readouterr().out.split())  # help text re-wrapped to one line
    assert f"(default {CLIPS_PER_PART}, the feature store's CLIPS_PER_PART)" in printed
