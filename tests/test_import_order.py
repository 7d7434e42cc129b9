"""Importing us never changes how transformers' own names import, in any order, and the Auto classes find
our model whichever came first. Each order runs in a fresh interpreter (imports happen once per process)."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ORDERS = [
    ("import onevision_encoder", "from transformers import pipeline"),
    ("from onevision_encoder import select_patches", "from transformers import Trainer"),
    ("from onevision_encoder import select_patches", "from transformers import PreTrainedModel"),
    ("import onevision_encoder", "from transformers import AutoModel"),
    ("import onevision_encoder", "import transformers.models.auto"),
    ("import onevision_encoder", "from transformers.pipelines import pipeline"),
    ("import onevision_encoder", "import transformers.modeling_utils"),
    ("from onevision_encoder import OneVisionEncoderModel", "from transformers import pipeline"),
    ("from transformers import pipeline", "import onevision_encoder"),
    ("from transformers import Trainer", "from onevision_encoder import select_patches"),
    ("import transformers.models.auto", "import onevision_encoder"),
    ("import transformers", "import onevision_encoder"),
]

# After both imports: transformers' names are transformers' own, and the Auto classes know our classes.
CHECK = """
import json, pathlib, tempfile
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PreTrainedModel, Trainer, pipeline

config = AutoConfig.for_model(
    "onevision_encoder", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
)
folder = pathlib.Path(tempfile.mkdtemp())
config.save_pretrained(folder)
(folder / "preprocessor_config.json").write_text("{}")  # no class named: found through the config's model type
print(json.dumps({
    "transformers": [pipeline.__module__, Trainer.__module__, PreTrainedModel.__module__],
    "config": type(config).__module__ + "." + type(config).__name__,
    "model": type(AutoModel.from_config(config)).__name__,
    "image_processor": type(AutoImageProcessor.from_pretrained(folder)).__name__,
}))
"""


def _run(order: tuple[str, str]) -> subprocess.CompletedProcess:
    program = "\n".join([*order, CHECK])
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    # Fresh interpreters cost seconds each (torch, transformers): run them side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(ORDERS, pool.map(_run, ORDERS), strict=True))


@pytest.mark.parametrize("order", ORDERS, ids=[" then ".join(order) for order in ORDERS])
def test_transformers_imports_whole_and_finds_our_classes(order, outcomes):
    outcome = outcomes[order]
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    found = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers.") for module in found["transformers"]), found
    assert found["config"] == "onevision_encoder.model.configuration.OneVisionEncoderConfig"
    assert found["model"] == "OneVisionEncoderModel"
    assert found["image_processor"] == "OneVisionEncoderImageProcessor"


def test_importing_the_package_loads_neither_torch_nor_transformers():
    program = "import sys, onevision_encoder; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    outcome = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.strip() == "[]"
