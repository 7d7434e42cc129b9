"""The LMM probe's classes registered with transformers' Auto classes, on import: the package's root imports this
module as soon as transformers' auto module has loaded (``common.transformers_loading``)."""

from __future__ import annotations


def register() -> None:
    """Register the LMM's config, model and processor with transformers' Auto classes (idempotent)."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    from .modeling import OneVisionLlavaConfig, OneVisionLlavaForConditionalGeneration
    from .processing import OneVisionLlavaProcessor

    AutoConfig.register(OneVisionLlavaConfig.model_type, OneVisionLlavaConfig, exist_ok=True)
    # transformers >= 4.46 has this Auto class; the LMM still loads by its own class without it.
    if hasattr(transformers, "AutoModelForImageTextToText"):
        transformers.AutoModelForImageTextToText.register(
            OneVisionLlavaConfig, OneVisionLlavaForConditionalGeneration, exist_ok=True
        )
    AutoProcessor.register(OneVisionLlavaConfig, OneVisionLlavaProcessor, exist_ok=True)


register()
