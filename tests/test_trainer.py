"""The trainer end to end on the tiny CPU config: learning, exact resume, 2 processes -> 1, export."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.training import load_config, train
from onevision_encoder.training.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-data")
    return make_synthetic_dataset(folder, num_classes=4, images=16, ocr=8, videos=8, video_frames=24)


def tiny_config(tmp_path, manifest, **overrides):
    """The shipped tiny config, pointed at the test's data, with small batches."""
    raw = yaml.safe_load(TINY.read_text())
    raw["data"] = {"manifest": str(manifest)}
    raw["heads"] = {
        "image": {"num_classes": 4, "batch_size": 4, "resolution": 56},
        "ocr": {"num_classes": 4, "batch_size": 2, "resolution": 56},
        "video": {"num_classes": 4, "batch_size": 2, "resolution": 56, "num_frames": 64, "num_patches": 128},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_release_config_states_the_release_recipe():
    config = load_config(REPO / "configs" / "release-stage2.yaml")
    heads = {name: (h.num_classes, h.batch_size, h.resolution) for name, h in config.heads.items()}
    assert heads == {"image": (2_000_000, 16, 448), "ocr": (365_187, 8, 448), "video": (400_000, 16, 224)}
    video = config.heads["video"]
    assert (video.num_frames, video.num_patches) == (64, 2048)
    assert video.ratios == {"codec": 0.5, "sampling": 0.375, "collage": 0.125}
    assert (config.loss.margin, config.loss.scale, config.loss.sample_rate, config.loss.num_labels) == (0.3, 64, 0.1, 8)
    assert config.loss.filter_threshold == 0.75
    assert (config.optim.lr, config.optim.weight_decay, config.optim.grad_clip) == (5e-5, 0.05, 5.0)
    assert config.train.bf16 and config.train.max_steps == 15_625 and config.model.preset == "large"


def test_the_loss_goes_down(data, tmp_path):
    config = load_config(tiny_config(tmp_path, data))
    config.heads.pop("video")  # images are enough to see learning, and fast
    config.heads["image"].batch_size = 8
    config.train.log_every = 1
    first = train(config, tmp_path / "run", max_steps=1, stop_after=1)
    last = train(config, tmp_path / "run2", max_steps=40)
    assert last["loss"] < 0.7 * first["loss"]
    assert last["samples_per_s"] > 0 and last["tokens_per_s"] > 0


def test_stop_and_resume_equals_one_uninterrupted_run(data, tmp_path):
    config = load_config(tiny_config(tmp_path, data, **{"train.checkpoint_every": 100}))
    train(config, tmp_path / "straight", max_steps=4)
    train(config, tmp_path / "resumed", max_steps=4, stop_after=2)
    assert not (tmp_path / "resumed" / "final").exists()
    train(config, tmp_path / "resumed", max_steps=4, resume=True)
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=1e-5, msg=key)
    centres = [
        load_file(tmp_path / run / "checkpoints" / "step-00000004" / "centres-image.rank0.safetensors")
        for run in ("straight", "resumed")
    ]
    torch.testing.assert_close(centres[0]["weight"], centres[1]["weight"], atol=1e-6, rtol=1e-5)


def test_worker_processes_change_nothing_but_speed(data, tmp_path):
    """Batches built ahead in 2 workers, stopped and resumed: the weights of a plain uninterrupted run."""
    config = load_config(tiny_config(tmp_path, data, **{"train.checkpoint_every": 100}))
    train(config, tmp_path / "plain", max_steps=4)
    config.data.workers = 2
    train(config, tmp_path / "workers", max_steps=4, stop_after=2)  # the workers built past step 2
    train(config, tmp_path / "workers", max_steps=4, resume=True)
    plain = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    workers = load_file(tmp_path / "workers" / "final" / "model.safetensors")
    for key in plain:
        torch.testing.assert_close(workers[key], plain[key], atol=1e-6, rtol=1e-5, msg=key)


def test_resume_without_a_checkpoint_is_an_error(data, tmp_path):
    config = load_config(tiny_config(tmp_path, data))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        train(config, tmp_path / "empty", max_steps=2, resume=True)


def test_final_export_loads_with_from_pretrained(data, tmp_path):
    config = load_config(tiny_config(tmp_path, data))
    config.heads.pop("video")
    train(config, tmp_path / "run", max_steps=2)
    final = tmp_path / "run" / "final"
    assert (final / "config.json").is_file() and (final / "preprocessor_config.json").is_file()
    assert isinstance(AutoModel.from_pretrained(final), OneVisionEncoderModel)
    assert OneVisionEncoderModel.from_pretrained(final).config.hidden_size == 64


def run_torchrun(nproc, *args, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command += ["-m", "onevision_encoder.train", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_processes_then_resume_on_one(data, tmp_path):
    config = tiny_config(tmp_path, data, **{"train.checkpoint_every": 100})
    out = tmp_path / "run"
    run_torchrun(2, "--config", config, "--out", out, "--max-steps", "4", "--stop-after", "2")
    checkpoint = out / "checkpoints" / "step-00000002"
    assert json.loads((checkpoint / "trainer.json").read_text())["world_size"] == 2
    shards = [load_file(checkpoint / f"centres-image.rank{r}.safetensors")["weight"] for r in (0, 1)]
    assert sum(s.shape[0] for s in shards) == 4  # the centres are split across the two ranks
    # the same run goes on in one process: the centres are re-sharded from the two slices
    result = subprocess.run(
        [sys.executable, "-m", "onevision_encoder.train", "--config", str(config), "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    whole = load_file(out / "checkpoints" / "step-00000004" / "centres-image.rank0.safetensors")["weight"]
    assert whole.shape == (4, 64)
    assert (out / "final" / "model.safetensors").is_file()


def test_fsdp_trains_the_same_run_as_ddp_and_resumes_anywhere(data, tmp_path):
    """FSDP shards the backbone but sums the same gradients: the DDP run's weights. Its checkpoints hold
    whole tensors, so a stopped run goes on with FSDP or in one plain process."""
    ddp = tiny_config(tmp_path, data, **{"train.checkpoint_every": 100})
    run_torchrun(2, "--config", ddp, "--out", tmp_path / "ddp", "--max-steps", "4")
    (tmp_path / "fsdp").mkdir()
    fsdp = tiny_config(tmp_path / "fsdp", data, **{"train.checkpoint_every": 100, "train.fsdp": True})
    run_torchrun(2, "--config", fsdp, "--out", tmp_path / "sharded", "--max-steps", "4", "--stop-after", "2")
    checkpoint = tmp_path / "sharded" / "checkpoints" / "step-00000002"
    assert load_file(checkpoint / "model.safetensors")["encoder.layers.0.mlp.fc1.weight"].shape == (128, 64)
    sharded_state = json.loads((checkpoint / "trainer.json").read_text())
    ddp_state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-00000004" / "trainer.json").read_text())
    assert (sharded_state["parallel"], ddp_state["parallel"]) == ("fsdp", "ddp")
    halves = sharded_state["backbone_values_per_process"] / ddp_state["backbone_values_per_process"]
    assert 0.45 < halves < 0.55  # each of the 2 processes holds about half the backbone
    shutil.copytree(tmp_path / "sharded", tmp_path / "plain")
    run_torchrun(2, "--config", fsdp, "--out", tmp_path / "sharded", "--resume")
    plain = load_file(tmp_path / "ddp" / "final" / "model.safetensors")
    sharded = load_file(tmp_path / "sharded" / "final" / "model.safetensors")
    # Bitwise: the same gradients, and a gradient norm (hence clipping factor) summed in the same order.
    assert sharded.keys() == plain.keys()
    assert [key for key in plain if not torch.equal(sharded[key], plain[key])] == []
    one_process = [sys.executable, "-m", "onevision_encoder.train", "--config", str(fsdp), "--resume"]
    result = subprocess.run([*one_process, "--out", str(tmp_path / "plain")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert OneVisionEncoderModel.from_pretrained(tmp_path / "plain" / "final").config.hidden_size == 64


def test_a_killed_run_resumes_to_the_same_weights(data, tmp_path):
    config = tiny_config(tmp_path, data, **{"train.checkpoint_every": 2})
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "onevision_encoder.train", "--config", str(config), "--out", str(out)]
    # Both runs in fresh processes, so nothing of this test process's state can differ between them.
    straight = [sys.executable, "-m", "onevision_encoder.train", "--config", str(config), "--max-steps", "6"]
    subprocess.run([*straight, "--out", str(tmp_path / "straight")], check=True, capture_output=True, timeout=600)
    process = subprocess.Popen([*command, "--max-steps", "6"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-00000002").is_dir() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait()
    assert not (out / "final").exists()
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    resumed = load_file(out / "final" / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=1e-5, msg=key)


def test_bf16_accumulation_and_activation_checkpointing(data, tmp_path):
    config = load_config(tiny_config(tmp_path, data, **{"train.bf16": True, "optim.accumulation": 2}))
    config.model.activation_checkpointing = True
    metrics = train(config, tmp_path / "run", max_steps=2)
    assert metrics["step"] == 2 and torch.isfinite(torch.tensor(metrics["loss"]))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 2
    exported = OneVisionEncoderModel.from_pretrained(tmp_path / "run" / "final")
    assert next(exported.parameters()).dtype == torch.float32  # float32 master weights


# --- a run folder that already holds a run --------------------------------------------------------


def fake_previous_run(out):
    """What an earlier run leaves in its folder (written by hand: no training needed to test the refusal)."""
    from onevision_encoder.training.checkpoint import RunFiles

    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 2}\n')
    RunFiles(out).record_log(out / "metrics.jsonl")
    return out


def images_only_config(tmp_path, manifest):
    raw = yaml.safe_load(tiny_config(tmp_path, manifest).read_text())
    raw["heads"] = {"image": raw["heads"]["image"]}
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_over_a_previous_run_is_refused_before_any_work(tmp_path, capsys):
    from onevision_encoder.cli.main import main

    raw = yaml.safe_load(TINY.read_text())
    raw["data"]["manifest"] = str(tmp_path / "generated" / "manifest.jsonl")  # generated by the first work done
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = fake_previous_run(tmp_path / "run")
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{out} already holds a training run" in error and "--resume" in error and "--overwrite" in error
    assert (out / "metrics.jsonl").read_text() == '{"step": 2}\n' and (out / "checkpoints" / "step-00000002").is_dir()
    assert not (tmp_path / "generated").exists()  # no data generated, no model built
    assert main(["train", "--config", str(config), "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite exclude each other" in capsys.readouterr().err
    # --overwrite deletes only what training writes: a folder of the user's that shares a name stays
    (tmp_path / "home" / "final").mkdir(parents=True)
    (tmp_path / "home" / "final" / "thesis.pdf").write_text("mine")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "home"), "--overwrite"]) == 2
    assert "home holds final/thesis.pdf, which training did not write: not deleting" in capsys.readouterr().err
    assert (tmp_path / "home" / "final" / "thesis.pdf").is_file() and not (tmp_path / "generated").exists()
    # the torchrun entry refuses the same way (exit 2, one line, no traceback)
    entry = subprocess.run(
        [sys.executable, "-m", "onevision_encoder.train", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert entry.returncode == 2 and "--overwrite" in entry.stderr and "Traceback" not in entry.stderr


def test_overwrite_deletes_the_previous_run_and_nothing_else(data, tmp_path):
    from onevision_encoder.cli.main import main

    out = fake_previous_run(tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    config = images_only_config(tmp_path, data)
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "1", "--overwrite"]) == 0
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "final" / "model.safetensors").is_file()


def test_overwrite_and_resume_never_delete_a_file_the_run_did_not_write(data, tmp_path, capsys):
    from onevision_encoder.cli.main import main

    out = tmp_path / "run"
    config = images_only_config(tmp_path, data)
    argv = ["train", "--config", str(config), "--out", str(out), "--max-steps", "2"]
    assert main([*argv, "--stop-after", "1"]) == 0
    assert main([*argv, "--resume"]) == 0  # checkpoints/step-1 and step-2, final/
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    for users in ("final/extra/notes.txt", "checkpoints/step-00000002/mine.txt"):
        (out / users).parent.mkdir(parents=True, exist_ok=True)
        (out / users).write_text("mine")
        capsys.readouterr()
        assert main([*argv, "--overwrite"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and f"{out} holds {users}, which training did not write: not deleting" in error[0]
        if users.startswith("final/"):  # final/ is replaced when a resumed run exports: refused the same way
            assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "3", "--resume"]) == 2
            assert f"{out} holds {users}, which training did not write" in capsys.readouterr().err
        assert (out / users).read_text() == "mine"
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted([*written, users])
        (out / users).unlink()
    assert main([*argv, "--overwrite"]) == 0  # only what the run wrote: deleted and written again
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2]


def _claim_worker(rank, world, port, run, empty, results):
    """Each rank sees a different folder: rank 0's view decides for all."""
    from onevision_encoder.common.distributed import process_group
    from onevision_encoder.training.trainer import PreviousRunError, claim_run_folder

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    outcomes = []
    with process_group():
        for folders, overwrite in (((run, empty), False), ((empty, run), True)):
            try:
                claim_run_folder(folders[rank], overwrite=overwrite)
                outcomes.append("claimed")
            except PreviousRunError:
                outcomes.append("refused")
    Path(results, f"rank{rank}").write_text(" ".join(outcomes))


def test_rank_0_decides_for_every_process(tmp_path):
    import socket

    from conftest import spawn_processes

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run, empty = fake_previous_run(tmp_path / "run"), tmp_path / "empty"
    spawn_processes(_claim_worker, (2, port, str(run), str(empty), str(tmp_path)))
    # 1. rank 0 sees a run and refuses: rank 1, seeing none, refuses too.
    # 2. with overwrite, rank 0 sees nothing to delete: rank 1 deletes nothing either (only rank 0 ever deletes).
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["refused claimed", "refused claimed"]
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints" / "step-00000002").is_dir()


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt", "centres-image.rank0.safetensors"])
def test_resume_from_a_damaged_checkpoint_names_the_file(data, tmp_path, damaged):
    from onevision_encoder.model import DamagedCheckpointError

    config = load_config(images_only_config(tmp_path, data))
    train(config, tmp_path / "run", max_steps=2, stop_after=1)
    path = tmp_path / "run" / "checkpoints" / "step-00000001" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedCheckpointError, match=rf"{path}: damaged or truncated checkpoint file") as error:
        train(config, tmp_path / "run", max_steps=2, resume=True)
    assert "step-00000001 to resume from the checkpoint before it" in str(error.value)
