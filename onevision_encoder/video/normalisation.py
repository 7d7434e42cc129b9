"""The pixel normalisation the encoder was trained with: OpenAI CLIP's per-channel mean and deviation;
and the luma weights that turn RGB pixels grey.

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

# ITU-R BT.601 luma of an RGB pixel (``rgb @ LUMA``, as PIL's ``convert("L")``): the colour
# jitter's contrast and saturation and the greyed-out areas of the selection pictures.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
LUMA.flags.writeable = False


def normalise(
    frames: np.ndarray, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[3, ..., H, W]``: scaled to [0, 1], then ``(x - mean) / std``."""
    import torch

    pixels = torch.from_numpy(np.array(frames, dtype=np.uint8)).float().div_(255)
    pixels = (pixels - torch.tensor(mean)) / torch.tensor(std)
    return pixels.movedim(-1, 0).contiguous()
