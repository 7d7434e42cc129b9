"""The LMM probe: the encoder as a vision tower of any causal LM (model, processor, conversations, data,
lmm-train's training) and its lmms-eval plugin. May import ``model``, ``codec``, ``video`` and ``common``.

Importing the package is light (``preprocess --pack`` reads conversations without torch); its classes load on
first use of their names, and register with transformers' Auto classes when it loads (``auto_registration``).
"""

from __future__ import annotations

from ..common.lazy import lazy_exports

# Public name -> the module that defines it.
_EXPORTS = {
    "OneVisionLlavaConfig": ".modeling",
    "OneVisionLlavaForConditionalGeneration": ".modeling",
    "vision_token_count": ".modeling",
    "OneVisionLlavaProcessor": ".processing",
    "TowerFeatures": ".tower",
    "vision_tower_features": ".tower",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
