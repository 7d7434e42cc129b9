"""The encoder: configuration, model and image/video processor."""

from ..auto_registration import register as register_with_transformers_auto_classes
from .configuration import PRESETS, OneVisionEncoderConfig
from .image_processing import OneVisionEncoderImageProcessor
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
    "PRESETS",
    "CheckpointMismatchError",
    "DamagedCheckpointError",
    "HubUnreachableError",
    "OneVisionEncoderConfig",
    "OneVisionEncoderImageProcessor",
    "OneVisionEncoderModel",
    "OneVisionEncoderPreTrainedModel",
    "PackedEncoderOutput",
    "TokenLayout",
    "TowerFeatures",
    "vision_tower_features",
]

register_with_transformers_auto_classes()
