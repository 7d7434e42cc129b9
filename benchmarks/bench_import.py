"""Import cost: what a data-loader worker pays to start, against what a model user pays.

Each import runs in a fresh interpreter (``python -c "import X"``), so nothing is cached in the process;
the jobs run interleaved, once each per round, and every figure is the median of ``--repeats`` rounds.
Beside each time: whether the import loaded transformers and torch (a data-loader worker that only selects
patches, ``onevision_encoder.codec``, must load neither).

    python benchmarks/bench_import.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPORTS = {
    "python alone": "",
    "onevision_encoder": "import onevision_encoder",
    "onevision_encoder.codec": "import onevision_encoder.codec",
    "onevision_encoder.codec + select_patches": "from onevision_encoder.codec import select_patches",
    "torch": "import torch",
    "transformers": "import transformers",
    "onevision_encoder.OneVisionEncoderModel": "from onevision_encoder import OneVisionEncoderModel",
}
PROBE = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "{statement}\n"
    "seconds = time.perf_counter() - start\n"
    "import json\n"
    "print(json.dumps({{'seconds': seconds, 'transformers': 'transformers' in sys.modules, "
    "'torch': 'torch' in sys.modules}}))\n"
)


def measure(statement: str) -> dict[str, object]:
    """Seconds of the import alone (interpreter start-up excluded) and what it loaded, in a fresh process."""
    output = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (at least 5)")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: medians of fewer rounds are noise on a shared machine")
    for statement in IMPORTS.values():
        measure(statement)  # warm the file system cache
    seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
    loaded: dict[str, dict[str, object]] = {}
    for _ in range(args.repeats):
        for name, statement in IMPORTS.items():
            result = measure(statement)
            seconds[name].append(float(result["seconds"]))  # type: ignore[arg-type]
            loaded[name] = result
    print(f"import time, fresh interpreter each, median of {args.repeats} interleaved rounds")
    print(f"  {'import':<42} {'seconds':>8}  transformers  torch")
    for name, values in seconds.items():
        print(
            f"  {name:<42} {statistics.median(values):8.3f}  {'yes' if loaded[name]['transformers'] else 'no':>12}"
            f"  {'yes' if loaded[name]['torch'] else 'no':>5}"
        )


if __name__ == "__main__":
    main()
