"""OneVision Encoder: a codec-style sparse video and native-resolution image encoder.

Importing the package is light: its public names load on first use, and the model registers with
transformers' Auto classes as soon as transformers' auto module loads (see ``auto_registration``),
so ``AutoConfig``, ``AutoModel`` and ``AutoImageProcessor`` load published checkpoint folders
without ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .auto_registration import register_when_transformers_loads

__version__ = "0.1.0"

# Public name -> the sub-package that defines it.
_EXPORTS = {
    "MODEL_SIZES": ".model",
    "CheckpointMismatchError": ".model",
    "DamagedCheckpointError": ".model",
    "HubUnreachableError": ".model",
    "CodecSelection": ".codec",
    "CorruptVideoError": ".codec",
    "ImageNotVideoError": ".codec",
    "NotAVideoError": ".codec",
    "SelectionError": ".codec",
    "VideoError": ".codec",
    "VideoNotFoundError": ".codec",
    "compute_codec_visible_indices": ".codec",
    "read_video_frames": ".codec",
    "select_patches": ".codec",
    "transcode": ".codec",
    "OneVisionEncoderConfig": ".model",
    "OneVisionEncoderForVideoClassification": ".model",
    "OneVisionEncoderImageProcessor": ".model",
    "OneVisionEncoderVideoProcessor": ".model",
    "OneVisionEncoderModel": ".model",
    "OneVisionEncoderPreTrainedModel": ".model",
    "OneVisionLlavaConfig": ".model",
    "OneVisionLlavaForConditionalGeneration": ".model",
    "OneVisionLlavaProcessor": ".model",
    "PackedEncoderOutput": ".model",
    "TokenLayout": ".model",
    "vision_token_count": ".model",
    "vision_tower_features": ".model",
    "chunk_visible_indices": ".video",
    "frame_positions": ".video",
    "gather_patches": ".video",
    "indices_to_positions": ".video",
    "mosaic": ".video",
    "patchify": ".video",
    "positions_to_indices": ".video",
    "unmosaic": ".video",
    "unpatchify": ".video",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


register_when_transformers_loads()
