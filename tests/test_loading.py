"""Checkpoints whose weights do not fit are refused, naming the weights."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from onevision_encoder import CheckpointMismatchError, OneVisionEncoderConfig, OneVisionEncoderModel
from onevision_encoder.model import DamagedCheckpointError


def altered_checkpoint(source, target, change):
    shutil.copy(source / "config.json", target / "config.json")
    weights = load_file(source / "model.safetensors")
    change(weights)
    save_file(weights, target / "model.safetensors")
    return target


CHANGES = {
    "missing": (
        lambda w: w.pop("encoder.layers.1.mlp.fc2.bias"),
        r"missing weights: encoder\.layers\.1\.mlp\.fc2\.bias",
    ),
    "unexpected": (
        lambda w: w.__setitem__("encoder.layers.7.extra", torch.zeros(3)),
        r"unexpected weights: encoder\.layers\.7\.extra",
    ),
    "mis-shaped": (
        lambda w: w.__setitem__("layernorm_pre.weight", torch.ones(64)),
        r"mis-shaped weights: layernorm_pre\.weight",
    ),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
@pytest.mark.parametrize("loader", [OneVisionEncoderModel, AutoModel], ids=["class", "auto"])
def test_bad_checkpoint_names_the_weights(parity_dir, tmp_path, kind, loader):
    change, message = CHANGES[kind]
    folder = altered_checkpoint(parity_dir / "tiny", tmp_path, change)
    with pytest.raises(CheckpointMismatchError, match=message):
        loader.from_pretrained(folder)


def test_strict_false_loads_and_reports(parity_dir, tmp_path):
    change, _ = CHANGES["missing"]
    folder = altered_checkpoint(parity_dir / "tiny", tmp_path, change)
    model, info = OneVisionEncoderModel.from_pretrained(folder, strict=False, output_loading_info=True)
    assert info["missing_keys"] and "encoder.layers.1.mlp.fc2.bias" in set(info["missing_keys"])
    assert isinstance(model, OneVisionEncoderModel)


def test_mis_shaped_weights_are_re_initialised_only_when_asked(parity_dir, tmp_path):
    change, _ = CHANGES["mis-shaped"]
    folder = altered_checkpoint(parity_dir / "tiny", tmp_path, change)
    message = r"mis-shaped weights: layernorm_pre\.weight\b.*; pass ignore_mismatched_sizes=True to re-initialise"
    with pytest.raises(CheckpointMismatchError, match=message):  # strict=False is about missing and unexpected ones
        OneVisionEncoderModel.from_pretrained(folder, strict=False)
    model, info = OneVisionEncoderModel.from_pretrained(folder, ignore_mismatched_sizes=True, output_loading_info=True)
    # transformers 5 reports (key, checkpoint shape, model shape), 4.57 the key alone.
    mismatched = [entry if isinstance(entry, str) else entry[0] for entry in info["mismatched_keys"]]
    assert mismatched == ["layernorm_pre.weight"]
    assert torch.equal(model.layernorm_pre.weight, torch.ones(128))  # re-initialised as _init_weights does
    checkpoint = load_file(folder / "model.safetensors")
    for key, value in model.state_dict().items():
        if key != "layernorm_pre.weight":
            assert torch.equal(value, checkpoint[key]), key
    # Asking for mis-shaped weights to be re-initialised leaves the other checks on.
    weights = load_file(folder / "model.safetensors")
    weights.pop("encoder.layers.1.mlp.fc2.bias")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(
        CheckpointMismatchError, match=r"missing weights: encoder\.layers\.1\.mlp\.fc2\.bias\); pass strict"
    ):
        OneVisionEncoderModel.from_pretrained(folder, ignore_mismatched_sizes=True)


def test_weights_from_a_state_dict_without_a_checkpoint(parity_dir):
    config = OneVisionEncoderConfig.from_pretrained(parity_dir / "tiny")
    weights = load_file(parity_dir / "tiny" / "model.safetensors")
    model = OneVisionEncoderModel.from_pretrained(None, config=config, state_dict=weights)
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())
    partial = {key: value for key, value in weights.items() if not key.startswith("head.")}
    with pytest.raises(
        CheckpointMismatchError, match=r"checkpoint the state_dict does not fit .*missing weights: head\."
    ):
        OneVisionEncoderModel.from_pretrained(None, config=config, state_dict=partial)
    model, info = OneVisionEncoderModel.from_pretrained(
        None, config=config, state_dict=partial, strict=False, output_loading_info=True
    )
    assert set(info["missing_keys"]) == set(weights) - set(partial)
    # The missing weights are initialised as _init_weights does for a new model.
    assert torch.equal(model.head.norm.weight, torch.ones(128))
    assert torch.equal(model.head.attention.in_proj_bias, torch.zeros(3 * 128))
    assert 0.01 < model.head.probe.std() < 0.03  # normal with initializer_range 0.02
    assert torch.equal(model.layernorm_pre.weight, weights["layernorm_pre.weight"])


def test_headless_weights_into_a_model_with_head_are_refused(parity_dir, tmp_path):
    shutil.copy(parity_dir / "tiny" / "config.json", tmp_path / "config.json")
    shutil.copy(parity_dir / "tiny_nohead" / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"missing weights: .*head\.probe"):
        OneVisionEncoderModel.from_pretrained(tmp_path)


def test_folder_without_weights_fails_clearly(tmp_path, parity_dir):
    shutil.copy(parity_dir / "tiny" / "config.json", tmp_path / "config.json")
    with pytest.raises(OSError, match=r"(?i)model\.safetensors|pytorch_model\.bin|weights"):
        OneVisionEncoderModel.from_pretrained(tmp_path)


# --- damaged files and an unreachable Hub -----------------------------------------------------------

# safetensors' own words for the damage change between its releases ("HeaderTooSmall" in 0.4, "header too
# small" later): the error gives whatever the installed release says of the file.
DAMAGE = {"empty": lambda data: b"", "truncated": lambda data: data[: len(data) // 2]}


def safetensors_reason(path):
    """What the installed safetensors says of the damaged ``path``."""
    with pytest.raises(SafetensorError) as error, safe_open(os.fspath(path), framework="pt"):
        pass
    return str(error.value)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("loader", [OneVisionEncoderModel, AutoModel], ids=["class", "auto"])
def test_damaged_weights_name_the_file(parity_dir, tmp_path, damage, loader):
    shutil.copy(parity_dir / "tiny" / "config.json", tmp_path / "config.json")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(DAMAGE[damage]((parity_dir / "tiny" / "model.safetensors").read_bytes()))
    message = rf"^{re.escape(str(weights))}: damaged or truncated safetensors file \((.+)\); re-download or re-save it$"
    with pytest.raises(DamagedCheckpointError, match=message) as raised:
        loader.from_pretrained(tmp_path)
    assert safetensors_reason(weights).endswith(re.match(message, str(raised.value)).group(1))


def cache_snapshot(cache, repo_id, files):
    """A hub id's files as huggingface_hub caches them (``models--ORG--NAME/snapshots/COMMIT/``)."""
    commit = "0" * 40
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


UNREACHABLE_HUB = """
import json, os, socket, sys, time
import huggingface_hub
from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.model import HubUnreachableError

attempts = []  # connections to the Hub, but for huggingface_hub's once-a-process agent registry fetch
connect = socket.socket.connect


def counting_connect(self, address):
    frame = sys._getframe(1)
    while frame is not None and not frame.f_code.co_filename.endswith("_detect_agent.py"):
        frame = frame.f_back
    if frame is None:
        attempts.append(address)
    return connect(self, address)


socket.socket.connect = counting_connect
result = {}
start = time.monotonic()
try:
    OneVisionEncoderModel.from_pretrained("nobody/not-cached")
except HubUnreachableError as error:
    result["error"] = str(error)
result["seconds"] = time.monotonic() - start
result["attempts"] = [len(attempts)]
result["hidden_size"] = OneVisionEncoderModel.from_pretrained("somebody/cached").config.hidden_size
result["attempts"].append(len(attempts))
try:
    OneVisionEncoderModel.from_pretrained("somebody/damaged")
except OSError as error:
    result["damaged"] = str(error)
result["attempts"].append(len(attempts))
result["offline_left_alone"] = not huggingface_hub.constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ
print(json.dumps(result))
"""


def test_an_unreachable_hub_fails_at_once_and_cached_models_still_load(parity_dir, tmp_path):
    """The Hub's endpoint is a local port that refuses connections (bound, not listening): a dead network,
    whatever this machine's own network. huggingface_hub alone retries 5 times over 23 s, then says only
    that it could not connect."""
    tiny = {name: (parity_dir / "tiny" / name).read_bytes() for name in ("config.json", "model.safetensors")}
    cache = tmp_path / "hub"
    cache_snapshot(cache, "somebody/cached", tiny)
    damaged = cache_snapshot(cache, "somebody/damaged", {**tiny, "model.safetensors": b""})
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env = {k: v for k, v in inherited.items() if "PROXY" not in k.upper()}  # straight to the local port
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # never listens: connections are refused
        env |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed.getsockname()[1]}", "HF_HUB_CACHE": str(cache)}
        env["HF_HOME"] = str(tmp_path / "home")
        done = subprocess.run([sys.executable, "-c", UNREACHABLE_HUB], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["error"].startswith("nobody/not-cached: the model could not be downloaded: http://127.0.0.1:")
    assert "Connection refused" in result["error"] and "local folder" in result["error"]
    assert result["attempts"] == [1, 2, 3]  # one request per from_pretrained: no retries
    assert result["seconds"] < 20  # a guard only: the count above is the test
    assert result["hidden_size"] == 128 and result["offline_left_alone"]  # the cached model loads offline
    assert result["damaged"].startswith(f"{damaged / 'model.safetensors'}: damaged or truncated safetensors file")
    assert "force_download=True" in result["damaged"]
