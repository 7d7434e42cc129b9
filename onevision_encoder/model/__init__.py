"""The encoder: configuration, model and image/video processor."""

from ..auto_registration import register as register_with_transformers_auto_classes
from .classification import AttentiveProbe, OneVisionEncoderForVideoClassification
from .configuration import MODEL_SIZES, OneVisionEncoderConfig
from .image_processing import OneVisionEncoderImageProcessor
from .llava import OneVisionLlavaConfig, OneVisionLlavaForConditionalGeneration, vision_token_count
from .llava_processing import OneVisionLlavaProcessor
from .loading import DamagedCheckpointError, HubUnreachableError
from .modeling import (
    CheckpointMismatchError,
    OneVisionEncoderModel,
    OneVisionEncoderPreTrainedModel,
    PackedEncoderOutput,
    TokenLayout,
)
from .tower import TowerFeatures, vision_tower_features

__all__ = [
    "MODEL_SIZES",
    "AttentiveProbe",
    "CheckpointMismatchError",
    "DamagedCheckpointError",
    "HubUnreachableError",
    "OneVisionEncoderConfig",
    "OneVisionEncoderForVideoClassification",
    "OneVisionEncoderImageProcessor",
    "OneVisionEncoderVideoProcessor",
    "OneVisionEncoderModel",
    "OneVisionEncoderPreTrainedModel",
    "OneVisionLlavaConfig",
    "OneVisionLlavaForConditionalGeneration",
    "OneVisionLlavaProcessor",
    "PackedEncoderOutput",
    "TokenLayout",
    "TowerFeatures",
    "vision_token_count",
    "vision_tower_features",
]

register_with_transformers_auto_classes()


def __getattr__(name: str) -> object:
    # The video processor needs torchvision (optional): imported on first use, it names what to install.
    if name == "OneVisionEncoderVideoProcessor":
        from .video_processing import OneVisionEncoderVideoProcessor

        return OneVisionEncoderVideoProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
