"""OneVision Encoder: a codec-style sparse video and native-resolution image encoder.

Importing the package is light: its public names load on first use, and the model registers with
transformers' Auto classes as soon as transformers' auto module loads (see ``common.transformers_loading``),
so ``AutoConfig``, ``AutoModel`` and ``AutoImageProcessor`` load published checkpoint folders
without ``trust_remote_code``.
"""

from __future__ import annotations

from typing import Any

from .common.lazy import lazy_exports
from .common.transformers_loading import import_when_transformers_loads

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
    "OneVisionLlavaConfig": ".lmm",
    "OneVisionLlavaForConditionalGeneration": ".lmm",
    "OneVisionLlavaProcessor": ".lmm",
    "PackedEncoderOutput": ".model",
    "TokenLayout": ".model",
    "vision_token_count": ".lmm",
    "vision_tower_features": ".lmm",
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


_exported, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .common.provenance import package_version

        return package_version()
    return _exported(name)


import_when_transformers_loads(f"{__name__}.model", f"{__name__}.lmm.auto_registration")
