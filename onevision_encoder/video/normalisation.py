"""The pixel normalisation the encoder was trained with: OpenAI CLIP's per-channel mean and deviation.

Kept out of the model package so that the selection (``codec``) and data loaders use it without
importing transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalise(
    frames: np.ndarray, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[3, ..., H, W]``: scaled to [0, 1], then ``(x - mean) / std``."""
    import torch

    pixels = torch.from_numpy(np.array(frames, dtype=np.uint8)).float().div_(255)
    pixels = (pixels - torch.tensor(mean)) / torch.tensor(std)
    return pixels.movedim(-1, 0).contiguous()
