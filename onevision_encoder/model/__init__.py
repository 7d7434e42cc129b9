"""The encoder: its configuration, model, video classifier, image and video processors, checkpoint loading,
and its registration with transformers' Auto classes (done on import). May import ``video``, ``codec`` and
``common``."""

from .auto_registration import register as register_with_transformers_auto_classes
from .classification import AttentiveProbe, OneVisionEncoderForVideoClassification
from .configuration import MODEL_SIZES, OneVisionEncoderConfig
from .image_processing import OneVisionEncoderImageProcessor
from .loading import DamagedCheckpointError, HubUnreachableError
from .modeling import (
    CheckpointMismatchError,
    OneVisionEncoderModel,
    OneVisionEncoderPreTrainedModel,
    PackedEncoderOutput,
    TokenLayout,
)

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
    "PackedEncoderOutput",
    "TokenLayout",
]

register_with_transformers_auto_classes()


def __getattr__(name: str) -> object:
    # The video processor needs torchvision (optional): imported on first use, it names what to install.
    if name == "OneVisionEncoderVideoProcessor":
        from .video_processing import OneVisionEncoderVideoProcessor

        return OneVisionEncoderVideoProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
