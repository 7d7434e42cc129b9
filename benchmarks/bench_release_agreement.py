"""Agreement of the ``lmm`` preset with selections the release's own pipeline published, per signal.

A sample folder holds the source video (``*.mp4``) and the release's ``stage1.visidx_thw.npy`` (see
tests/fixtures/release_lmm_sample/README.md). For each sample the preset selects with motion only
(``fusion_weights=(1, 0)``), the residual only (``(0, 1)``) and both (the preset's 1:1), and the Jaccard
index of the (t, h, w) sets over t >= 1 is printed (random selection: about 0.11).

    python benchmarks/bench_release_agreement.py [SAMPLE_FOLDER ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from onevision_encoder.codec import select_patches
from onevision_encoder.codec.codec_selection import selection_agreement

DEFAULT_SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "release_lmm_sample"
SIGNALS = {"motion only": (1.0, 0.0), "residual only": (0.0, 1.0), "both (1:1)": (1.0, 1.0)}


def agreements(folder: Path) -> dict[str, float]:
    """Jaccard (t >= 1) of the ``lmm`` preset's selection with the release's, per signal."""
    videos = sorted(folder.glob("*.mp4"))
    if len(videos) != 1:
        raise SystemExit(f"error: {folder}: expected one .mp4 video, found {len(videos)}")
    release = np.load(folder / "stage1.visidx_thw.npy")
    figures = {}
    for name, weights in SIGNALS.items():
        selection = select_patches(videos[0], preset="lmm", fusion_weights=weights)
        figures[name] = selection_agreement(selection.positions_thw, release)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", nargs="*", type=Path, default=[DEFAULT_SAMPLE], help="sample folders")
    args = parser.parse_args()
    print("| sample | " + " | ".join(SIGNALS) + " |")
    print("|---" * (len(SIGNALS) + 1) + "|")
    for folder in args.samples:
        figures = agreements(folder)
        print(f"| {folder.name} | " + " | ".join(f"{figures[name]:.3f}" for name in SIGNALS) + " |")


if __name__ == "__main__":
    main()
