"""The encoder's classes registered with transformers' Auto classes (the model package does it when imported)."""

from __future__ import annotations

import inspect


def register() -> None:
    """Register the encoder's config, model, video classifier, image processor and (with torchvision) video
    processor with transformers' Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForVideoClassification
    from transformers.utils import is_torchvision_available

    from .classification import OneVisionEncoderForVideoClassification
    from .configuration import OneVisionEncoderConfig
    from .image_processing import OneVisionEncoderImageProcessor
    from .modeling import OneVisionEncoderModel

    AutoConfig.register(OneVisionEncoderConfig.model_type, OneVisionEncoderConfig, exist_ok=True)
    AutoModel.register(OneVisionEncoderConfig, OneVisionEncoderModel, exist_ok=True)
    AutoModelForVideoClassification.register(
        OneVisionEncoderConfig, OneVisionEncoderForVideoClassification, exist_ok=True
    )
    # One image processor (PIL and NumPy, the release's bicubic resize) serves every backend. transformers >= 5
    # asks for its "torchvision" backend whenever torchvision is installed, and with the processor registered as
    # the PIL one only, it warned "Requested torchvision backend is not available" before falling back to it.
    if "image_processor_classes" in inspect.signature(AutoImageProcessor.register).parameters:
        backends = {"pil": OneVisionEncoderImageProcessor, "torchvision": OneVisionEncoderImageProcessor}
        AutoImageProcessor.register(OneVisionEncoderConfig, image_processor_classes=backends, exist_ok=True)
    else:  # transformers 4.x: a "fast" processor must be torchvision-based (BaseImageProcessorFast)
        AutoImageProcessor.register(
            OneVisionEncoderConfig, slow_image_processor_class=OneVisionEncoderImageProcessor, exist_ok=True
        )
    # The video processor needs torchvision, an optional dependency: without it AutoVideoProcessor stays
    # unregistered and the class itself raises an ImportError that says what to install.
    if is_torchvision_available():
        from transformers import AutoVideoProcessor

        from .video_processing import OneVisionEncoderVideoProcessor

        AutoVideoProcessor.register(OneVisionEncoderConfig, OneVisionEncoderVideoProcessor, exist_ok=True)
