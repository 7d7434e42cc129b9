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

import transformers

SUITE_ROOT = Path(sys.prefix) / "transformers-tests" / transformers.__version__

STAND_INS = {
    "__init__.py": "",
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in: a vision encoder does not generate."""\n\n\nclass GenerationTesterMixin:\n    pass\n'
    ),
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in: the export tests are not in the sdist."""\n\n\nclass ExportTesterMixin:\n    pass\n'
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
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
        for name, text in STAND_INS.items():
            stand_in = unpacked / "tests" / name
            if not stand_in.exists():
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text(text)
        try:
            os.rename(unpacked, destination)
        except OSError:
            if not (destination / "tests" / "__init__.py").exists():  # else another process finished first
                raise


if not (SUITE_ROOT / "tests" / "__init__.py").exists():
    if SUITE_ROOT.exists():
        shutil.rmtree(SUITE_ROOT)
    _fetch(SUITE_ROOT)
# A regular package named ``tests`` on sys.path wins over this repository's tests folder (a namespace).
sys.path.insert(0, str(SUITE_ROOT))
