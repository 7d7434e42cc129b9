"""`onevision preprocess` at dataset scale: inputs named as given, failures that stay one input's,
crashing and orphaned workers, interrupts, a full or read-only OUT, one run per OUT, LLaVA files.

Most tests run the command in this process with a fake selection (no decoding: inputs are empty
files); the ones about processes run the console script on tiny generated clips. The command's
modules are imported inside the tests: the worker processes of the runner test import this module,
and start fast when it is light.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from onevision_encoder.codec.codec_selection import PACK_POSITIONS_FILE
from onevision_encoder.common import files
from onevision_encoder.jobs.batch import DONE, FAILED, Outcome, run_in_workers

ONEVISION = Path(sys.executable).with_name("onevision")


def preprocess(capsys, *args):
    from onevision_encoder.cli.main import main

    code = main(["preprocess", *map(str, args)])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def summary(out, suffix=""):
    return json.loads((out / f"summary{suffix}.json").read_text())


def failures(out):
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def finished(out):
    """Output folders with their meta.json (relative names). A run may be renaming a temporary folder into
    place meanwhile: os.walk passes over a folder that vanishes under it (rglob raises), and hidden
    (temporary) folders are not finished ones."""
    found = []
    for root, folders, names in os.walk(out):
        folders[:] = [name for name in folders if not name.startswith(".")]
        if "meta.json" in names:
            found.append(str(Path(root).relative_to(out)))
    return sorted(found)


def videos(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def fake(monkeypatch):
    """``select_patches`` and ``write_pack`` without decoding (a selection of 4 patches written by the real
    ``write_files``). ``fail`` maps a file name to the exception its selection raises; ``write_error`` (with
    ``writes_before_error``) makes writing a folder fail; ``on_select`` is called with each file name first."""
    import numpy as np

    from onevision_encoder import codec
    from onevision_encoder.codec.codec_selection import CodecSelection
    from onevision_encoder.jobs import preprocess as preprocess_job

    state = SimpleNamespace(selected=[], fail={}, writes=0, writes_before_error=0, write_error=None, on_select=None)

    class Selection(CodecSelection):
        def write_files(self, folder, *args, **kwargs):
            if state.write_error is not None and state.writes >= state.writes_before_error:
                raise state.write_error
            state.writes += 1
            super().write_files(folder, *args, **kwargs)

    def select_patches(video, **options):
        state.selected.append(Path(video).name)
        if state.on_select is not None:
            state.on_select(Path(video).name)
        if Path(video).name in state.fail:
            raise state.fail[Path(video).name]
        indices = np.arange(4)
        return Selection(indices, indices, np.arange(2), (2, 2, 2), None, "none", {"preset": options["preset"]})

    def write_pack(selection, folder, image_format):
        for index in range(8):
            (folder / f"mosaic_{index}.{image_format}").write_bytes(b"")
        (folder / PACK_POSITIONS_FILE).write_bytes(b"")

    monkeypatch.setattr(codec, "select_patches", select_patches)
    monkeypatch.setattr(preprocess_job, "write_pack", write_pack)
    return state


# Inputs and outputs ------------------------------------------------------------------------------


def test_linked_inputs_get_their_own_outputs_named_as_given(tmp_path, capsys, fake):
    data = videos(tmp_path / "blobs", "x.mp4", "y.mp4")
    links = tmp_path / "links"
    (links / "sub").mkdir(parents=True)
    (links / "a.mp4").symlink_to(data / "x.mp4")
    (links / "b.mp4").symlink_to(data / "x.mp4")  # two links to one file: two inputs
    (links / "sub" / "c.mp4").symlink_to(data / "y.mp4")
    out = tmp_path / "out"
    result = preprocess(capsys, links, "--out", out)
    assert result.returncode == 0, result.stderr
    assert finished(out) == ["a.mp4", "b.mp4", "sub/c.mp4"]  # never the targets' paths
    assert "done 3, skipped 0, failed 0" in result.stdout
    report = summary(out)
    assert report["videos"] == 3 == report["done"] + report["skipped"] + report["failed"] + report["remaining"]


def test_an_output_over_its_input_is_a_usage_error(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4")
    (tmp_path / "same").symlink_to(folder)
    result = preprocess(capsys, folder, "--out", tmp_path / "same")  # out/a.mp4/ would replace a.mp4
    assert result.returncode == 2
    assert f"the output {tmp_path / 'same' / 'a.mp4'} would overwrite the input {folder / 'a.mp4'}" in result.stderr
    assert (folder / "a.mp4").is_file() and sorted(p.name for p in folder.iterdir()) == ["a.mp4"]
    assert fake.selected == []


def test_a_folder_gives_its_videos_and_counts_the_other_files(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4", "B.MOV", "notes.txt", "cover.jpg")
    out = tmp_path / "out"
    result = preprocess(capsys, folder, "--out", out)
    assert result.returncode == 0, result.stderr
    assert finished(out) == ["B.MOV", "a.mp4"] and sorted(fake.selected) == ["B.MOV", "a.mp4"]
    assert "done 2, skipped 0, failed 0" in result.stdout and "ignored 2 other files" in result.stdout
    assert (summary(out)["videos"], summary(out)["ignored"]) == (2, 2)

    texts = preprocess(capsys, folder, "--include", "*.txt", "--include", "*.JPG", "--out", tmp_path / "texts")
    assert texts.returncode == 0 and finished(tmp_path / "texts") == ["cover.jpg", "notes.txt"]
    assert summary(tmp_path / "texts")["ignored"] == 2

    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'notes.txt'}\n{folder / 'a.mp4'}\n")  # a list's entries are all taken
    listed = preprocess(capsys, listing, "--out", tmp_path / "listed")
    assert listed.returncode == 0 and finished(tmp_path / "listed") == ["a.mp4", "notes.txt"]


@pytest.mark.parametrize(
    ("ray_installed", "args", "problem"),
    [
        (False, ["--engine", "ray"], "needs Ray, which is not installed: pip install 'onevision-encoder[ray]'"),
        (True, ["--ray-address", "auto"], "--ray-address goes with --engine ray"),
        (True, ["--engine", "ray", "--ray-address", "head"], "--ray-address must be auto or HOST:PORT, got 'head'"),
        (True, ["--engine", "ray", "--ray-address", "auto", "--workers", "2"], "--workers sizes the Ray started here"),
    ],
)
def test_engine_options_are_checked_before_any_work(tmp_path, capsys, fake, monkeypatch, ray_installed, args, problem):
    from onevision_encoder.cli import engine_options

    monkeypatch.setattr(engine_options, "ray_installed", lambda: ray_installed)
    folder = videos(tmp_path / "videos", "a.mp4")
    result = preprocess(capsys, folder, "--out", tmp_path / "out", *args)
    assert result.returncode == 2 and problem in result.stderr  # never the local engine instead
    assert fake.selected == [] and not (tmp_path / "out").exists()


def test_an_input_listed_twice_is_a_usage_error(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"videos/a.mp4\n{folder / 'a.mp4'}\n")
    result = preprocess(capsys, listing, "--out", tmp_path / "out")
    assert result.returncode == 2 and "an input is given more than once" in result.stderr
    assert fake.selected == [] and not (tmp_path / "out").exists()


# A rerun checks what it resumes; it replaces only what it wrote ----------------------------------


def made_by(folder):
    return json.loads((folder / "meta.json").read_text())["made_by"]


FAST = ["--frames", "8", "-k", "512"]


def test_a_rerun_with_other_options_stops_before_any_work_and_overwrite_replaces(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4", "b.mp4")
    out = tmp_path / "out"
    assert preprocess(capsys, folder, "--out", out, *FAST).returncode == 0
    before = {name: (out / name / "meta.json").read_bytes() for name in finished(out)}
    fake.selected.clear()
    other = preprocess(capsys, folder, "--out", out, "--frames", "8", "-k", "1024")
    assert other.returncode == 2 and other.stderr.splitlines() == [
        f"onevision preprocess: error: {out / 'a.mp4'} was made otherwise (num_patches 512 there, 1024 now), and "
        "so was 1 other finished folder; add --overwrite to replace them"
    ]
    lmm = preprocess(capsys, folder, "--out", out, "--preset", "lmm")
    assert lmm.returncode == 2 and 'preset "encoder" there, "lmm" now' in lmm.stderr
    assert fake.selected == [] and before == {name: (out / name / "meta.json").read_bytes() for name in before}

    replaced = preprocess(capsys, folder, "--out", out, "--frames", "8", "-k", "1024", "--overwrite")
    assert replaced.returncode == 0 and "done 2, skipped 0, failed 0" in replaced.stdout
    assert [made_by(out / name)["options"]["num_patches"] for name in finished(out)] == [1024, 1024]
    again = preprocess(capsys, folder, "--out", out, "--frames", "8", "-k", "1024")
    assert again.returncode == 0 and "done 0, skipped 2, failed 0" in again.stdout


def test_a_changed_input_or_an_earlier_versions_folder_stops_the_rerun(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4", "b.mp4")
    out = tmp_path / "out"
    assert preprocess(capsys, folder, "--out", out, *FAST).returncode == 0
    fake.selected.clear()
    (folder / "b.mp4").write_bytes(b"another video")
    changed = preprocess(capsys, folder, "--out", out, *FAST)
    assert changed.returncode == 2 and fake.selected == []
    assert f"{out / 'b.mp4'} was made otherwise (input changed: {folder / 'b.mp4'}); add --overwrite" in changed.stderr
    (folder / "b.mp4").write_bytes(b"")  # the same content again, at another time (as a copy): the same input
    assert "done 0, skipped 2, failed 0" in preprocess(capsys, folder, "--out", out, *FAST).stdout

    meta = out / "a.mp4" / "meta.json"
    earlier = json.loads(meta.read_text())
    earlier["made_by"]["version"] = "0.0.1"  # another package version alone: noted, reused
    meta.write_text(json.dumps(earlier))
    noted = preprocess(capsys, folder, "--out", out, *FAST)
    assert noted.returncode == 0 and "done 0, skipped 2, failed 0" in noted.stdout
    assert "note: 1 finished folder was made by onevision-encoder 0.0.1 (this is " in noted.stderr

    del earlier["made_by"]  # as the previous version of the tool wrote it: no record
    meta.write_text(json.dumps(earlier))
    refused = preprocess(capsys, folder, "--out", out, *FAST)
    assert refused.returncode == 2 and fake.selected == []
    assert "written by an earlier version of onevision, with no record of its input and options" in refused.stderr
    replaced = preprocess(capsys, folder, "--out", out, *FAST, "--overwrite")
    assert replaced.returncode == 0 and "done 1, skipped 1, failed 0" in replaced.stdout
    assert made_by(out / "a.mp4")["input"]["path"] == str(folder / "a.mp4")


def test_overwrite_never_replaces_a_folder_holding_a_users_file(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4", "b.mp4")
    out = tmp_path / "out"
    assert preprocess(capsys, folder, "--out", out, *FAST).returncode == 0
    (out / "a.mp4" / "notes.txt").write_text("mine")
    reused = preprocess(capsys, folder, "--out", out, *FAST)  # a finished folder is reused as it is
    assert reused.returncode == 0 and "done 0, skipped 2, failed 0" in reused.stdout
    fake.selected.clear()
    refused = preprocess(capsys, folder, "--out", out, "--frames", "8", "-k", "1024", "--overwrite")
    assert refused.returncode == 2 and fake.selected == []
    assert f"{out / 'a.mp4'} holds files this tool did not write: notes.txt; move them" in refused.stderr
    assert (out / "a.mp4" / "notes.txt").read_text() == "mine"
    assert made_by(out / "a.mp4")["options"]["num_patches"] == 512

    theirs = tmp_path / "theirs" / "b.mp4"  # a folder of the user's where an output would go
    theirs.mkdir(parents=True)
    (theirs / "plan.txt").write_text("mine")
    for overwrite in ([], ["--overwrite"]):
        result = preprocess(capsys, folder, "--out", tmp_path / "theirs", *FAST, *overwrite)
        assert result.returncode == 2 and "holds files this tool did not write: plan.txt" in result.stderr
    assert fake.selected == [] and [path.name for path in theirs.iterdir()] == ["plan.txt"]


def test_a_frame_range_is_part_of_the_output_name(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4")
    conversations = tmp_path / "llava.json"
    conversations.write_text(json.dumps([{"id": "a", "video": "a.mp4", "conversations": turns()}]))
    out = tmp_path / "out"
    for frames in ("0:8", "8:16"):
        argv = ["--preset", "lmm", "--frames", "8", "--pack", "--conversations", conversations, "--frame-range", frames]
        assert preprocess(capsys, folder, "--out", out, *argv).returncode == 0
    assert finished(out) == ["a.mp4@0-8", "a.mp4@8-16"]
    (packed,) = json.loads((out / "conversations.packed.json").read_text())
    assert packed["image"] == [f"a.mp4@8-16/mosaic_{m}.jpg" for m in range(8)]


def test_failures_are_recorded_as_they_happen(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "v0.mp4", "v1.mp4", "v2.mp4")
    out = tmp_path / "out"
    out.mkdir()
    (out / "failures.jsonl").write_text('{"path": "a previous run\'s"}\n')  # retried by this run
    fake.fail["v0.mp4"] = LibraryError("cannot decode")
    recorded_by_then = {}
    fake.on_select = lambda name: recorded_by_then.setdefault(name, failures(out))
    result = preprocess(capsys, folder, "--out", out)
    assert result.returncode == 1 and "done 2, skipped 0, failed 1" in result.stdout
    first = {"path": str(folder / "v0.mp4"), "error": "test_preprocess_batch.LibraryError", "message": "cannot decode"}
    assert recorded_by_then == {"v0.mp4": [], "v1.mp4": [first], "v2.mp4": [first]}  # not only at the end
    assert failures(out) == [first] and summary(out)["failed"] == 1


# Failures stay one input's ---------------------------------------------------------------------


def test_any_exception_is_that_videos_failure_and_the_run_goes_on(tmp_path, capsys, fake):
    cv2 = pytest.importorskip("cv2")
    folder = videos(tmp_path / "videos", *(f"v{index}.mp4" for index in range(10)))
    fake.fail["v3.mp4"] = cv2.error("OpenCV: (-215:Assertion failed)\n  in function 'resize'\n")
    fake.fail["v6.mp4"] = RuntimeError("a bug of ours")
    out = tmp_path / "out"
    result = preprocess(capsys, folder, "--out", out)
    assert result.returncode == 1
    assert "done 8, skipped 0, failed 2" in result.stdout
    assert [(f["path"], f["error"]) for f in failures(out)] == [
        (str(folder / "v3.mp4"), "cv2.error"),
        (str(folder / "v6.mp4"), "RuntimeError"),
    ]
    assert "(-215:Assertion failed)" in failures(out)[0]["message"]
    assert f"error: {folder / 'v3.mp4'}: cv2.error: OpenCV: (-215:Assertion failed) in function 'resize'" in (
        result.stderr.splitlines()
    )  # one line
    assert len(finished(out)) == 8 and summary(out)["failed"] == 2


class LibraryError(Exception):
    pass


def _alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return False
    return "Z" not in state.split()[1]


def meeting_job(item):
    """``crash`` kills its process, ``raise`` raises; any other item waits until another runs at the same
    time (or until a meeting was seen), and answers with its process id."""
    name, folder = item
    folder = Path(folder)
    if name == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if name == "raise":
        raise LibraryError("the decoder said no")
    marker = folder / f"running.{os.getpid()}"
    marker.touch()
    try:
        deadline = time.monotonic() + 60  # only reached when jobs do not run side by side
        while not (folder / "met").exists() and time.monotonic() < deadline:
            if any(m != marker and _alive(int(m.suffix[1:])) for m in folder.glob("running.*")):
                (folder / "met").touch()
            time.sleep(0.01)
    finally:
        marker.unlink()
    return Outcome(DONE, message=str(os.getpid()))


def test_a_video_that_kills_its_worker_costs_only_itself_and_the_rest_keep_the_parallelism(tmp_path, capsys):
    names = ["crash", "a", "b", "c", "d", "e", "raise", "f", "g"]
    results = dict(run_in_workers([(name, str(tmp_path)) for name in names], meeting_job, workers=2))
    outcomes = {name: outcome for (name, _), outcome in results.items()}
    assert sorted(outcomes) == sorted(names)
    crashed = outcomes.pop("crash")  # killed its process in the pool, and again alone
    assert (crashed.status, crashed.error) == (FAILED, "WorkerCrashed") and "SIGKILL" in crashed.message
    raised = outcomes.pop("raise")
    assert (raised.status, raised.error, raised.message) == (
        FAILED,
        "test_preprocess_batch.LibraryError",
        "the decoder said no",
    )
    assert all(outcome.status == DONE for outcome in outcomes.values())
    assert "a worker process died" in capsys.readouterr().err
    # Nothing finished before the crash (no job runs alone to its end), so everything ran after it: two
    # jobs side by side, in a replaced pool of 2 processes plus one process for "a", retried alone
    # beside it (not one fresh process per remaining video).
    assert (tmp_path / "met").exists()
    assert len({outcome.message for outcome in outcomes.values()}) <= 3


def short_job(item):
    time.sleep(0.2)
    return Outcome(DONE, message=str(os.getpid()))


def test_a_worker_dying_while_a_video_is_handed_to_the_pool_is_a_death_not_an_error(tmp_path, capsys, monkeypatch):
    """Between the pool's check that it is whole and its wake-up of its manager thread, the manager may find a
    dead worker and close the wake-up pipe: submit then raises OSError("handle is closed"), not BrokenProcessPool.
    That race (seen under load) is made certain here: the third video's hand-over kills a worker first."""
    import onevision_encoder.jobs.batch as batch_module

    handed = []

    class RacingPool(batch_module.ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            handed.append(args)
            if len(handed) == 3:
                os.kill(next(iter(self._processes)), signal.SIGKILL)
                raise OSError("handle is closed")
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(batch_module, "ProcessPoolExecutor", RacingPool)
    items = [f"video{index}" for index in range(5)]
    outcomes = dict(run_in_workers(items, short_job, workers=2))
    assert sorted(outcomes) == items and all(outcome.status == DONE for outcome in outcomes.values())
    assert "a worker process died" in capsys.readouterr().err


# A full or read-only OUT -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError("16384 requested and 2016 written"), "no space left on device"),  # numpy's short write
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    ],
)
def test_a_full_or_read_only_out_stops_the_run_at_once(tmp_path, capsys, fake, error, reason):
    folder = videos(tmp_path / "videos", *(f"v{index}.mp4" for index in range(8)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # a previous run's: must not stay behind, stale
    fake.write_error, fake.writes_before_error = error, 2
    result = preprocess(capsys, folder, "--out", out)
    assert result.returncode == 1
    assert f"error: {reason}: {out}" in result.stderr.splitlines()
    assert fake.selected == ["v0.mp4", "v1.mp4", "v2.mp4"]  # not one more video decoded for nothing
    assert finished(out) == ["v0.mp4", "v1.mp4"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # the unfinished folder is gone
    report = summary(out)
    assert (report["done"], report["failed"], report["remaining"], report["stopped"]) == (2, 0, 6, f"{reason}: {out}")
    assert failures(out) == []
    assert "stopped: done 2, skipped 0, failed 0, not processed 6" in result.stdout
    fake.write_error = None  # space again: the run resumes
    rerun = preprocess(capsys, folder, "--out", out)
    assert rerun.returncode == 0 and "done 6, skipped 2, failed 0" in rerun.stdout


def test_when_even_the_summary_cannot_be_written_it_says_so(tmp_path, capsys, fake, monkeypatch):
    from onevision_encoder.jobs import report

    folder = videos(tmp_path / "videos", "a.mp4", "b.mp4")
    out = tmp_path / "out"
    fake.write_error, fake.writes_before_error = OSError(errno.ENOSPC, "No space left on device"), 1

    def full(path, content):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "atomic_write", full)
    result = preprocess(capsys, folder, "--out", out)
    assert result.returncode == 1
    assert f"error: no space left on device: {out} (the summary could not be written either:" in result.stderr
    assert finished(out) == ["a.mp4"]


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, fake, monkeypatch):
    folder = videos(tmp_path / "videos", "a.mp4")
    in_place = tmp_path / "file"
    in_place.write_text("a file where the folder should be")
    with pytest.raises(SystemExit) as stopped:  # a usage error of the command line: argparse exits 2
        preprocess(capsys, folder, "--out", in_place)
    assert stopped.value.code == 2 and f"argument --out: {in_place} is a file, not a folder" in capsys.readouterr().err

    read_only = tmp_path / "read-only"
    make_temporary = files.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # chmod does not stop root: fail as a read-only mount does
        if dir is not None and Path(dir) == read_only:
            raise OSError(errno.EROFS, "Read-only file system")
        return make_temporary(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    result = preprocess(capsys, folder, "--out", read_only)
    assert result.returncode == 1 and f"error: cannot write to {read_only}: Read-only file system" in result.stderr
    assert fake.selected == []


# One run per OUT (and shard) ---------------------------------------------------------------------


def test_a_second_run_on_the_same_out_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys, fake):
    folder = videos(tmp_path / "videos", "a.mp4", "b.mp4")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from onevision_encoder.common.files import folder_lock\n"
            f"with folder_lock({str(out)!r}, '.preprocess.lock'):\n    print('held', flush=True); sys.stdin.read()",
            "a-holder",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        refused = preprocess(capsys, folder, "--out", out)
        assert refused.returncode == 1
        assert f"{out} is in use by another run (pid {holder.pid} on " in refused.stderr
        assert f"{sys.executable} -c a-holder" in refused.stderr  # its command
        assert fake.selected == [] and finished(out) == []
        other_shard = preprocess(capsys, folder, "--out", out, "--shard", "1/2")  # shards may share OUT
        assert other_shard.returncode == 0 and finished(out) == ["b.mp4"]
    finally:
        holder.kill()  # as an out-of-memory kill would: its lock file stays, its lock goes with it
        holder.wait()
    assert (out / ".preprocess.lock").exists()
    taken_over = preprocess(capsys, folder, "--out", out)
    assert taken_over.returncode == 0 and "done 1, skipped 1, failed 0" in taken_over.stdout
    assert not (out / ".preprocess.lock").exists()


def test_a_shard_clearing_its_leftovers_leaves_a_running_shards_folders_alone(tmp_path, monkeypatch):
    """Shards share OUT: while shard 0 clears what its killed run left, shard 1 keeps writing and renaming
    its folders into place. Shard 0 must not walk into them, nor stop when a folder vanishes under it."""
    out = tmp_path / "out"
    (out / "sub" / "done.mp4").mkdir(parents=True)
    (out / "sub" / "done.mp4" / "meta.json").write_text("{}")
    ours = out / "sub" / ".a.mp4.shard0of2.x1.tmp"  # shard 0's killed run: a folder and a file
    (ours / "mosaics").mkdir(parents=True)
    (out / ".summary.shard-0-of-2.json.shard0of2.x2.tmp.json").write_text("")
    theirs = out / "sub" / ".b.mp4.shard1of2.y1.tmp"  # shard 1, running
    (theirs / "part").mkdir(parents=True)
    vanishing = out / "c.mp4"  # shard 1 replacing a folder (--overwrite): moved aside mid-walk
    (vanishing / "mosaics").mkdir(parents=True)
    real_scandir, walked = os.scandir, []

    def scandir(path="."):
        if not isinstance(path, int):  # shutil.rmtree lists by file descriptor
            walked.append(Path(path))
            if Path(path) == vanishing:  # listed in OUT, gone the moment it is walked
                os.rename(vanishing, out / ".c.mp4.shard1of2.old-z.tmp")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert files.remove_leftovers(out, "shard0of2.") == 2
    monkeypatch.undo()
    assert not ours.exists() and (theirs / "part").is_dir() and (out / "sub" / "done.mp4" / "meta.json").is_file()
    assert not [path for path in walked if ".shard1of2." in str(path)]


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    held = rf"{tmp_path} is in use by another run \(pid {os.getpid()} on .* since .*\): .*python"
    with files.folder_lock(tmp_path, ".lock"), pytest.raises(files.FolderInUseError, match=held):
        files.folder_lock(tmp_path, ".lock").__enter__()  # flock refuses a second open file, even in one process
    assert not (tmp_path / ".lock").exists()
    with files.folder_lock(tmp_path, ".lock"):  # free again
        pass


# LLaVA conversation files ------------------------------------------------------------------------


def turns(text="<video>\nWhat moves?"):
    return [{"from": "human", "value": text}, {"from": "gpt", "value": "A dog."}]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"video": "a.mp4",', "not valid JSON (line 1"),
        ('{"video": "a.mp4", "conversations": []}\n{"video": ', "line 2: not valid JSON"),
        ('[{"id": "t", "conversations": []}, 3]', "item 2 is not an object but int"),
        (
            '[{"video": ["a.mp4", "b.mp4"], "conversations": []}]',
            "item 1: 'video' must be one path (a string), not list",
        ),
        (
            json.dumps([{"id": "t"}, {"video": "a.mp4", "conversations": turns("<video> and <video>")}]),
            "item 2: 2 <video>",
        ),
        (json.dumps([{"video": "a.mp4", "conversations": []}]), "item 1: no conversation turns"),
    ],
)
def test_a_bad_conversations_file_is_a_usage_error_before_any_work(tmp_path, capsys, fake, text, problem):
    folder = videos(tmp_path / "videos", "a.mp4")
    conversations = tmp_path / "llava.json"
    conversations.write_text(text)
    out = tmp_path / "out"
    result = preprocess(capsys, folder, "--preset", "lmm", "--pack", "--conversations", conversations, "--out", out)
    assert result.returncode == 2
    assert f"error: {conversations}: {problem}" in result.stderr
    assert fake.selected == [] and not out.exists()


@pytest.mark.parametrize("lines", [False, True], ids=["json", "jsonl"])
def test_conversations_keep_text_and_image_items_list_dropped_ones_and_keep_their_format(tmp_path, capsys, fake, lines):
    folder = videos(tmp_path / "videos", "good.mp4", "bad.mp4")
    fake.fail["bad.mp4"] = LibraryError("cannot decode")
    items = [
        {"id": "text", "conversations": turns("Hello?")},
        {"id": "picture", "image": "cat.jpg", "conversations": turns("<image>\nWhat is it?")},
        {"id": "good", "video": "good.mp4", "conversations": turns()},
        {"id": "bad", "video": "bad.mp4", "conversations": turns()},
        {"id": "lost", "video": "missing.mp4", "conversations": turns()},
    ]
    conversations = tmp_path / ("llava.jsonl" if lines else "llava.json")
    conversations.write_text("".join(json.dumps(i) + "\n" for i in items) if lines else json.dumps(items, indent=2))
    out = tmp_path / "out"
    result = preprocess(capsys, folder, "--preset", "lmm", "--pack", "--conversations", conversations, "--out", out)
    assert result.returncode == 1  # bad.mp4 failed
    written = out / ("conversations.packed.jsonl" if lines else "conversations.packed.json")
    text = written.read_text()
    packed = [json.loads(line) for line in text.splitlines()] if lines else json.loads(text)
    assert [item["id"] for item in packed] == ["text", "picture", "good"]
    assert packed[:2] == items[:2]  # passed through unchanged
    assert packed[2]["image"] == [f"good.mp4/mosaic_{m}.jpg" for m in range(8)] and "video" not in packed[2]
    assert "conversations: 5 items, 1 rewritten, 2 passed through, 2 dropped" in result.stdout
    recorded = failures(out)
    assert [f["path"] for f in recorded] == [str(folder / "bad.mp4"), str(conversations), str(conversations)]
    assert [(f.get("item"), f["error"]) for f in recorded[1:]] == [(4, "ItemDropped"), (5, "ItemDropped")]
    assert "bad.mp4 failed: test_preprocess_batch.LibraryError: cannot decode" in recorded[1]["message"]
    assert "missing.mp4 is not among the inputs" in recorded[2]["message"]
    report = summary(out)["conversations"]
    assert (report["items"], report["rewritten"], report["passed_through"]) == (5, 1, 2)
    assert [(d["item"], d["id"]) for d in report["dropped"]] == [(4, "bad"), (5, "lost")]


# Processes: interrupts and a killed main process -------------------------------------------------


def clips(folder, count):
    from onevision_encoder.video.synthetic import make_clip, write_clip

    folder.mkdir()
    return [
        write_clip(
            folder / f"clip{index:02d}.mp4", make_clip("moving_object", num_frames=16, size=(64, 64), seed=index)
        )
        for index in range(count)
    ]


def wait_for(condition, what, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_an_interrupted_run_counts_every_folder_it_finished(tmp_path):
    source = tmp_path / "videos"
    clips(source, 24)
    out = tmp_path / "out"
    command = [str(ONEVISION), "preprocess", str(source), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: finished(out) or process.poll() is not None, "a finished video")
    process.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
    stdout, stderr = process.communicate(timeout=120)
    report = summary(out)
    assert report["done"] == len(finished(out)), stdout + stderr  # videos that finished as it stopped too
    assert report["done"] + report["skipped"] + report["failed"] + report["remaining"] == report["videos"] == 24
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary folders, no lock left
    if report["remaining"]:
        assert process.returncode == 130 and "interrupted: " in stdout


def test_workers_end_with_a_killed_main_process(tmp_path):
    from conftest import spawned_worker_pids  # here: the pool's workers import this module, light on purpose

    source = tmp_path / "videos"
    clips(source, 24)
    out = tmp_path / "out"
    command = [str(ONEVISION), "preprocess", str(source), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        wait_for(lambda: len(spawned_worker_pids(process.pid)) == 2, "two pool workers")
        # Frozen, the main process hands out no more videos, so the run cannot end before the kill.
        process.send_signal(signal.SIGSTOP)
        workers = spawned_worker_pids(process.pid)
        process.kill()  # the main process only, as the out-of-memory killer or a lost ssh session does
        process.wait()
        assert len(workers) == 2
        wait_for(lambda: not any(_alive(pid) for pid in workers), "the workers to end with their parent", 60)
        assert len(finished(out)) < 24
    finally:
        process.kill()
        for pid in workers:  # leftovers of a failed test must not outlive it
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
