"""transformers' own common test suites, from the source distribution of the installed transformers.

The mixins (``ModelTesterMixin``, ``ConfigTester``, ``ImageProcessingTestMixin``,
``VideoProcessingTestMixin``) ship in the sdist's ``tests/`` folder, not in the wheel. The first run
downloads the sdist of exactly the installed version from the package registry (``pip download
--no-binary :all:``) and unpacks its ``tests/`` into the environment (``<sys.prefix>/transformers-tests/
<version>``); later runs reuse it. If it cannot be fetched the session fails with the reason: these tests
never pass by being skipped.

The sdist carries only the top-level test files. The few modules they import from sub-folders that
are not shipped get stand-ins here (``STAND_INS``): generation and export mixins, which do not apply
to a vision encoder (no ``generate``, no ``torch.export`` test target), and the common config keyword
arguments that ``ConfigTester.check_config_arguments_init`` sets and reads back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import transformers

SUITE_ROOT = Path(sys.prefix) / "transformers-tests" / transformers.__version__

# Paths relative to the unpacked sdist.
STAND_INS = {
    "tests/__init__.py": "",
    "tests/generation/__init__.py": "",
    "tests/generation/test_utils.py": (
        '"""Stand-in: a vision encoder does not generate."""\n\n\nclass GenerationTesterMixin:\n    pass\n'
    ),
    "tests/exporters/__init__.py": "",
    "tests/exporters/test_export.py": (
        '"""Stand-in: the export tests are not in the sdist."""\n\n\nclass ExportTesterMixin:\n    pass\n'
    ),
    "tests/utils/__init__.py": "",
    "tests/utils/test_configuration_utils.py": (
        '"""Stand-in: attributes every PreTrainedConfig takes, with values that differ from the defaults."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "architectures": ["OneVisionEncoderModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
    # 5.x's image and processor mixins import it from the repository's utils/ folder, to map the URLs of test
    # images to a CI cache; the tests that load such images are for models with real checkpoints.
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Stand-in: URLs stay URLs (no CI cache of hub objects here)."""\n\n\n'
        "def url_to_local_path(url, *args, **kwargs):\n    return url\n"
    ),
}


def _fetch(destination: Path) -> None:
    """Download the sdist of the installed transformers and unpack its ``tests/`` (atomically) to ``destination``."""
    version = transformers.__version__
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        command += ["--dest", scratch, f"transformers=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(scratch).glob("transformers-*.tar.gz"))
        if result.returncode or not archives:
            raise RuntimeError(
                f"transformers' common tests need the transformers {version} source distribution, and it could "
                f"not be fetched ({' '.join(command)}):\n{result.stderr.strip() or result.stdout.strip()}"
            )
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archives[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.split("/")[1:2] == ["tests"] and m.isfile()]
            for member in members:
                member.name = member.name.split("/", 1)[1]
            archive.extractall(unpacked, members=members, filter="data")
        _write_stand_ins(unpacked)
        try:
            os.rename(unpacked, destination)
        except OSError:
            if not (destination / "tests" / "__init__.py").exists():  # else another process finished first
                raise


def _write_stand_ins(root: Path) -> None:
    """The stand-ins that ``root`` (an unpacked suite) lacks, each written whole (renamed into place)."""
    for name, text in STAND_INS.items():
        stand_in = root / name
        if not stand_in.exists():
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            partial = stand_in.with_name(f".{stand_in.name}.{os.getpid()}.partial")
            partial.write_text(text)
            os.replace(partial, stand_in)


if not (SUITE_ROOT / "tests" / "__init__.py").exists():
    if SUITE_ROOT.exists():
        shutil.rmtree(SUITE_ROOT)
    _fetch(SUITE_ROOT)
_write_stand_ins(SUITE_ROOT)  # a suite unpacked by an earlier version of this file may lack newer ones
# A regular package named ``tests`` on sys.path wins over this repository's tests folder (a namespace).
sys.path.insert(0, str(SUITE_ROOT))

# Marks transformers' own conftest registers; the tests they select are skipped here by their own conditions
# (GPU, flash-attn, slow runs).
TRANSFORMERS_MARKS = (
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "order",
    "slow",
    "torch_compile_test",
    "torch_export_test",
)


def pytest_configure(config: pytest.Config) -> None:
    for mark in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' own test suite")
