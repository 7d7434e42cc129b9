"""`onevision preprocess --engine ray`: the local engine's outputs and records, a worker killed during the
job, a driver killed and the run resumed.

One Ray of 2 CPUs serves the module: the runs in this process use it (the engine keeps a Ray this
process joined), the command run as a subprocess joins it with --ray-address. Inputs are tiny
generated clips and two bad files (not a video; a truncated one).
"""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

ONEVISION = Path(sys.executable).with_name("onevision")
CPUS = 2
TIMINGS = ("seconds", "clips_per_second")  # how long a run or a selection took: the one difference allowed


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=CPUS, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def make_clips(folder, names, frames=16):
    from onevision_encoder.video.synthetic import make_clip, write_clip

    for seed, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_clip(folder / name, make_clip("moving_object", num_frames=frames, size=(64, 64), seed=seed))


def preprocess(capsys, *args):
    from onevision_encoder.cli.main import main

    code = main(["preprocess", *map(str, args)])
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def contents(out):
    """Every file under ``out`` by its path: bytes, or JSON without its timings; hidden files included."""
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.loads(data)
            for timed in (data, data.get("decode", {})):  # a selection's decode statistics are timed too
                for key in TIMINGS:
                    timed.pop(key, None)
        found[str(path.relative_to(out))] = data
    return found


def folders(tree):
    return {name: data for name, data in tree.items() if "/" in name}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Good clips, a file that is not a video and a truncated one, named relative to the working directory
    (the tasks must work in the driver's); and what the local engine makes of them."""
    root = tmp_path_factory.mktemp("corpus")
    make_clips(root / "videos", [f"clip{index}.mp4" for index in range(5)] + ["sub/clip5.mp4"])
    (root / "videos" / "notes.mp4").write_text("not a video")
    (root / "videos" / "truncated.mp4").write_bytes((root / "videos" / "clip0.mp4").read_bytes()[:1500])
    with pytest.MonkeyPatch.context() as patch:
        from onevision_encoder.cli.main import main

        patch.chdir(root)
        assert main(["preprocess", "videos", "--out", "local"]) == 1  # the two bad files
    return SimpleNamespace(root=root, local=contents(root / "local"))


def test_ray_makes_the_local_engines_outputs_records_and_shards(corpus, cluster, capsys, monkeypatch):
    monkeypatch.chdir(corpus.root)
    result = preprocess(capsys, "videos", "--out", "ray", "--engine", "ray")
    assert result.returncode == 1, result.stderr
    assert "done 6, skipped 0, failed 2" in result.stdout
    assert contents(corpus.root / "ray") == corpus.local  # selections, failures and summary alike
    assert [record["error"] for record in map(json.loads, (corpus.root / "ray/failures.jsonl").open())] == [
        "NotAVideoError",
        "NotAVideoError",
    ]

    for engine in ("ray", "local"):  # a rerun skips what either engine finished, and retries the failures
        rerun = preprocess(capsys, "videos", "--out", "ray", "--engine", engine)
        assert rerun.returncode == 1 and "done 0, skipped 6, failed 2" in rerun.stdout
    other = preprocess(capsys, "videos", "--out", "ray", "--engine", "ray", "-k", "1024")  # checked before any task
    assert other.returncode == 2 and other.stderr.splitlines() == [
        f"onevision preprocess: error: {Path('ray/clip0.mp4')} was made otherwise (num_patches 2048 there, 1024 now), "
        "and so were 5 other finished folders; add --overwrite to replace them"
    ]
    replaced = preprocess(capsys, "videos", "--out", "ray", "--engine", "ray", "-k", "1024", "--overwrite")
    assert replaced.returncode == 1 and "done 6, skipped 0, failed 2" in replaced.stdout
    records = [json.loads(meta.read_text())["made_by"] for meta in (corpus.root / "ray").rglob("meta.json")]
    assert len(records) == 6 and {record["options"]["num_patches"] for record in records} == {1024}

    preprocess(capsys, "videos", "--out", "shards", "--engine", "ray", "--shard", "0/2")
    preprocess(capsys, "videos", "--out", "shards", "--shard", "1/2")
    sharded = contents(corpus.root / "shards")
    assert folders(sharded) == folders(corpus.local)
    summaries = [sharded[f"summary.shard-{index}-of-2.json"] for index in range(2)]
    assert [(s["videos"], s["done"] + s["failed"]) for s in summaries] == [(4, 4), (4, 4)]


def test_a_worker_killed_during_the_job_leaves_complete_outputs(corpus, cluster, capsys, monkeypatch, tmp_path):
    from onevision_encoder.jobs import preprocess as preprocess_job

    select = preprocess_job.process_video
    deaths = tmp_path / "deaths"
    deaths.mkdir()

    def dying(item, **settings):  # shipped by value to the workers: the local function has no module to import
        name = Path(item[0]).name
        if name == "clip3.mp4" or (name == "clip1.mp4" and not list(deaths.glob(f"{name}.*"))):
            (deaths / f"{name}.{os.getpid()}").touch()
            os.kill(os.getpid(), signal.SIGKILL)  # as a decoder's crash or the out-of-memory killer would
        return select(item, **settings)

    monkeypatch.setattr(preprocess_job, "process_video", dying)
    monkeypatch.chdir(corpus.root)
    result = preprocess(capsys, "videos", "--out", "crashed", "--engine", "ray")
    assert result.returncode == 1 and "done 5, skipped 0, failed 3" in result.stdout
    assert sorted(path.name.split(".mp4")[0] for path in deaths.iterdir()) == ["clip1", "clip3", "clip3"]
    made = contents(corpus.root / "crashed")
    expected = {name: data for name, data in folders(corpus.local).items() if not name.startswith("clip3.mp4/")}
    assert folders(made) == expected  # clip1.mp4's second attempt went through; nothing half-written
    crashed, *others = map(json.loads, (corpus.root / "crashed/failures.jsonl").open())
    assert (crashed["path"], crashed["error"]) == ("videos/clip3.mp4", "WorkerCrashed")
    assert "died on each of its 2 attempts" in crashed["message"]
    assert others == list(map(json.loads, (corpus.root / "local/failures.jsonl").open()))


def test_a_stopped_or_killed_driver_leaves_a_run_that_resumes_to_the_clean_result(
    cluster, capsys, monkeypatch, tmp_path
):
    names = [f"clip{index:02d}.mp4" for index in range(16)]
    make_clips(tmp_path / "videos", names, frames=32)
    monkeypatch.chdir(tmp_path)
    assert preprocess(capsys, "videos", "--out", "clean").returncode == 0
    out = tmp_path / "out"
    command = [str(ONEVISION), "preprocess", "videos", "--out", "out", "--engine", "ray", "--ray-address", cluster]

    def finished():
        return len(list(out.glob("*/meta.json")))

    stopped = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: finished() or stopped.poll() is not None, "a finished video")
    stopped.send_signal(signal.SIGTERM)  # as `kill PID`: the tasks in flight are cancelled, the summary written
    stdout, stderr = stopped.communicate()
    assert stopped.returncode == 130 and "interrupted: " in stdout, stderr
    report = json.loads((out / "summary.json").read_text())
    assert report["done"] == finished() and report["remaining"] == len(names) - finished() > 0
    assert not [path for path in out.rglob("*") if path.name.startswith(".")]  # no temporary folders, no lock

    done_before = finished()
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: finished() > done_before or killed.poll() is not None, "another finished video")
        killed.send_signal(signal.SIGSTOP)  # frozen: it hands out no more videos, however fast the rest go
    finally:
        killed.kill()  # as the out-of-memory killer or a lost ssh session would
        _, stderr = killed.communicate()
    assert killed.returncode == -signal.SIGKILL, stderr
    wait_for(lambda: ray.available_resources().get("CPU") == CPUS, "Ray to end the dead driver's tasks")
    done_before = finished()
    assert done_before < len(names)

    rerun = preprocess(capsys, "videos", "--out", "out", "--engine", "ray")
    assert rerun.returncode == 0 and f"done {len(names) - done_before}, skipped {done_before}, failed 0" in rerun.stdout
    resumed, clean = contents(out), contents(tmp_path / "clean")
    assert folders(resumed) == folders(clean)  # no leftovers of the killed run: its temporary folders are gone
    assert resumed["summary.json"] == {
        **clean["summary.json"],
        "done": len(names) - done_before,
        "skipped": done_before,
    }


def wait_for(condition, what, timeout_s=60):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_encode_hands_out_the_parts_of_a_feature_folder(cluster, tmp_path, parity_dir, capsys):
    """`encode --engine ray` (and --workers 2 of the local engine) write the parts one process writes."""
    import numpy as np
    from PIL import Image

    from onevision_encoder.cli.main import main
    from onevision_encoder.evaluation import FeatureStore

    data = tmp_path / "data"
    make_clips(data, ["walk.mp4"])
    for seed in range(4):
        pixels = np.random.default_rng(seed).integers(0, 255, (56, 70, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"photo{seed}.png")
    (data / "broken.mp4").write_bytes(b"not a video" * 40)
    model = ["--model", parity_dir / "tiny", "--device", "cpu", "--clips-per-part", "2"]
    stores = {}
    for name, engine in (("one", []), ("ray", ["--engine", "ray"]), ("workers", ["--workers", "2"])):
        code = main(["encode", *map(str, [data, *model, *engine, "--out", tmp_path / name])])
        assert code == 1, capsys.readouterr()  # broken.mp4 failed, the others were encoded
        stores[name] = FeatureStore.open(tmp_path / name)
    output = capsys.readouterr()
    assert output.err.count("broken.mp4") == 3
    one = stores.pop("one")
    assert one.missing_parts() == [] and len(one.failures()) == 1
    for name, store in stores.items():
        assert store.missing_parts() == [] and store.failures() == one.failures(), name
        for row in range(6):
            if row == 0:  # broken.mp4 (sorted first): recorded, no features
                continue
            for key, value in one.row(row).items():
                assert np.array_equal(np.asarray(store.row(row)[key]), np.asarray(value)), (name, row, key)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert (summary["encoded"], summary["failed"], summary["parts_done"]) == (5, 1, 3), name


def test_encode_writes_one_file_in_one_process(tmp_path, parity_dir, capsys):
    from onevision_encoder.cli.main import main

    make_clips(tmp_path, ["walk.mp4"])
    single = ["encode", tmp_path / "walk.mp4", "--model", parity_dir / "tiny", "--out", tmp_path / "f.safetensors"]
    for engine in (["--engine", "ray"], ["--workers", "2"]):
        assert main([*map(str, single), *engine]) == 2
    assert capsys.readouterr().err.count("give --out a folder") == 2
