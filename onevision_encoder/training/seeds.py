"""Seeds made of a run's seed and integers (head, epoch, index, step, rank ...), stable across runs.

Two mixes, each kept for the numbers that depend on it: :func:`sample_seed` (NumPy's ``SeedSequence``,
32 bits) orders the data and seeds each sample's augmentations, so a checkpoint's data position means
the same samples; :func:`mix_seed` (splitmix64, 63 bits) draws the loss's initial centres and its
per-step labels and kept centres. They give different numbers for the same integers.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, *parts: int) -> int:
    """A per-sample seed from the run seed and non-negative integers (head, epoch, index ...).

    ``SeedSequence`` pads with zeros, so trailing zero parts do not change it: ``sample_seed(s, h, e, 0)``
    equals ``sample_seed(s, h, e)``."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64), so nearby steps and ranks give unrelated streams."""
    state = 0
    for value in values:
        state = ((state ^ (int(value) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state & ((1 << 63) - 1)
