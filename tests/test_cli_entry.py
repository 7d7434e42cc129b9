"""How the package and its command line start: light imports, Auto-class registration in either
import order, ``--version``, ``python -m onevision_encoder``, ``--debug`` before or after the subcommand."""

import subprocess
import sys
from pathlib import Path

import pytest

import onevision_encoder

PARITY_TINY = Path(__file__).resolve().parent / "fixtures" / "upstream_parity" / "tiny"


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_the_package_loads_neither_torch_nor_transformers():
    result = python(
        "import sys, onevision_encoder\n"
        "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'av') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_data_loader_worker_selects_patches_without_transformers(tmp_path):
    # What a worker runs: the selection and the model inputs it makes (normalised pixels, indices).
    result = python(
        "import sys\n"
        "from onevision_encoder.codec import select_patches\n"
        "from onevision_encoder.video.synthetic import make_clip, write_clip\n"
        f"path = write_clip({str(tmp_path / 'clip.mp4')!r}, make_clip('moving_object', num_frames=16))\n"
        "selection = select_patches(path, num_frames=16, num_patches=256, anchors='none', keep_frames=True)\n"
        "inputs = selection.model_inputs('mosaic')\n"
        "print(sorted(inputs), 'transformers' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['pixel_values', 'visible_indices'] False"


@pytest.mark.parametrize(
    "imports",
    [
        "import onevision_encoder\nfrom transformers import AutoConfig, AutoModel",
        "from transformers import AutoConfig, AutoModel\nimport onevision_encoder",
        "import transformers.models.auto\nimport onevision_encoder\nfrom transformers import AutoConfig, AutoModel",
        "from onevision_encoder import OneVisionEncoderModel\nfrom transformers import AutoConfig, AutoModel",
    ],
    ids=["package-first", "transformers-first", "auto-module-first", "model-first"],
)
def test_auto_classes_find_the_model_whatever_the_import_order(imports):
    result = python(
        f"{imports}\n"
        f"config = AutoConfig.from_pretrained({str(PARITY_TINY)!r})\n"
        f"model = AutoModel.from_pretrained({str(PARITY_TINY)!r})\n"
        "print(type(config).__name__, type(model).__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OneVisionEncoderConfig", "OneVisionEncoderModel"]


def test_public_names_load_on_first_use():
    assert onevision_encoder.select_patches.__module__ == "onevision_encoder.codec.select"
    assert "OneVisionEncoderModel" in dir(onevision_encoder)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        onevision_encoder.not_a_name  # noqa: B018


def test_version_and_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "onevision_encoder", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == f"onevision {onevision_encoder.__version__}"
    usage = subprocess.run([sys.executable, "-m", "onevision_encoder"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "COMMAND" in usage.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_or_after_the_subcommand(tmp_path, where):
    command = ["encode", tmp_path / "clip.mp4", "--model", tmp_path / "no-model", "--out", tmp_path / "f.npz"]
    args = ["--debug", *command] if where == "before" else [*command, "--debug"]
    result = subprocess.run(
        [sys.executable, "-m", "onevision_encoder", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    quiet = subprocess.run(
        [sys.executable, "-m", "onevision_encoder", *map(str, command)], capture_output=True, text=True, timeout=300
    )
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr


def test_torchrun_entry_reports_usage_errors_as_the_cli_does(tmp_path):
    listing = tmp_path / "train.csv"
    listing.write_text("clip.mp4,0\n")
    (tmp_path / "clip.mp4").write_bytes(b"")
    args = ["--train", listing, "--val", listing, "--model", tmp_path / "m", "--mode", "chunk", "--out", listing]
    result = subprocess.run(
        [sys.executable, "-m", "onevision_encoder.probe", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(listing) in result.stderr
