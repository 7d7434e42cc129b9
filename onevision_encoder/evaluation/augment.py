"""The probe's training augmentation: colour jitter applied alike to every frame of a clip.

The release's probe trains with "colour jitter p=0.8"; the strengths here
(brightness, contrast and saturation 0.4, hue 0.1) are the common video-probe values, as the
release's are not recorded. Each operation follows torchvision's ``ColorJitter`` and the four
run in a random order. A view is seeded by the clip's path and the view number, so every process
and every rerun draws the same jitter for the same clip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from ..video.normalisation import LUMA


@dataclass(frozen=True)
class ColorJitter:
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``frames`` uint8 ``[T, H, W, 3]`` RGB -> the same frames jittered (with probability ``p``)."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"colour jitter needs uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
        if rng.random() >= self.p:
            return frames
        clip = frames.astype(np.float32) / 255
        for operation in rng.permutation(4):
            if operation == 0:
                clip = clip * _factor(rng, self.brightness)
            elif operation == 1:
                means = (clip @ LUMA).mean(axis=(1, 2))[:, None, None, None]
                clip = _blend(clip, means, _factor(rng, self.contrast))
            elif operation == 2:
                clip = _blend(clip, (clip @ LUMA)[..., None], _factor(rng, self.saturation))
            else:
                clip = _shift_hue(clip, rng.uniform(-self.hue, self.hue))
            clip = clip.clip(0, 1)
        return np.round(clip * 255).astype(np.uint8)


def view_rng(name: str, view: int) -> np.random.Generator:
    """The random stream of one augmented view of one clip (independent of rank and order)."""
    digest = hashlib.sha256(f"{name}\0{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _factor(rng: np.random.Generator, strength: float) -> float:
    return float(rng.uniform(max(0.0, 1 - strength), 1 + strength))


def _blend(clip: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    return factor * clip + (1 - factor) * other


def _shift_hue(clip: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by ``shift`` turns (OpenCV's float HSV has hue in degrees)."""
    flat = np.ascontiguousarray(clip.reshape(-1, clip.shape[-2], 3), dtype=np.float32)
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360 * shift) % 360
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(clip.shape)
