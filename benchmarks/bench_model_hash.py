"""What identifying a model by its content costs `onevision encode` (and the probe's cache) per run.

A checkpoint folder of a 1.2 GB weights file (random bytes made with `head -c`, the size of ViT-L in
float32) and a config.json is hashed by `feature_store.model_identity`, as each encode run does before
any work: three timed runs after one untimed (the file then sits in the page cache, as it does once
written or loaded); the disk's own read rate bounds a cold run.

    python benchmarks/bench_model_hash.py [--gigabytes 1.2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import onevision_encoder.model.loading  # noqa: F401 - imported here, as encode has, so that no import is timed
from onevision_encoder.jobs.feature_store import model_identity

FIXTURE_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "upstream_parity" / "tiny" / "config.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.2)
    args = parser.parse_args()
    size = int(args.gigabytes * 1e9)
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(FIXTURE_CONFIG, Path(folder, "config.json"))
        with open(Path(folder, "model.safetensors"), "wb") as weights:
            subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=weights, check=True)
        model_identity(folder)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model_identity(folder)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{size / 1e9:.2f} GB: {median:.2f} s (median of 3; {', '.join(f'{t:.2f}' for t in times)}), "
          f"{size / 1e9 / median:.2f} GB/s")  # fmt: skip


if __name__ == "__main__":
    main()
