"""Configuration of the OneVision Encoder (the published ``config.json`` loads as is)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# Sizes of the published families; everything else is shared.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "base": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "large": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
    "huge": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16},
}

LAYER_NORM_TYPES = ("layer_norm", "rms_norm")


class OneVisionEncoderConfig(PretrainedConfig):
    """Configuration of :class:`~onevision_encoder.OneVisionEncoderModel`.

    The defaults are the published ``large`` model. Unknown keys of a published ``config.json``
    (``auto_map``, ``dtype``, ``transformers_version`` ...) are accepted and kept.

    Args:
        hidden_size: Width D of the transformer.
        intermediate_size: Hidden width of each MLP (4 D in the releases).
        num_hidden_layers: Number of encoder blocks.
        num_attention_heads: Attention heads; the head dimension ``hidden_size / num_attention_heads`` must be a
            multiple of 16
            (the rotary split of each half head into 4:6:6 parts for t, h, w).
        num_channels: Input channels.
        patch_size: Side of the square patches (Conv2d kernel and stride).
        image_size: Informational training resolution; the forward pass accepts any multiple of ``patch_size``.
        hidden_act: Activation of the MLPs (``gelu`` is the exact erf GELU).
        layer_norm_eps: Epsilon of every normalisation layer.
        layer_norm_type: ``layer_norm`` or ``rms_norm``.
        attention_dropout: Dropout on attention probabilities during training.
        initializer_range: Standard deviation of the random initialisation.
        rope_theta: Base of the rotary frequencies.
        rope_temporal_size: Number of frames of the virtual temporal grid that 5-D clips are placed on.
        use_head: Whether the model has ``layernorm_post`` and the attention-pooling head.
        classifier_num_heads: Heads of the attentive probe of
            :class:`~onevision_encoder.OneVisionEncoderForVideoClassification` (one learned query over all tokens);
            ``None`` takes ``hidden_size // 64``, as ``onevision probe`` does. Must divide ``hidden_size``.
        classifier_mlp_ratio: Hidden width of the probe's MLP, in multiples of ``hidden_size``.
        freeze_backbone: Whether the classifier's encoder is frozen: it then runs in eval mode without gradient
            and its parameters do not require one, so training (``Trainer`` included) updates the probe alone.
            ``False`` fine-tunes the encoder with the probe.
        label_smoothing: Label smoothing of the classifier's cross-entropy loss (``onevision probe`` trains with 0.1).
        num_frames: Frames the ``video-classification`` pipeline of transformers 5 asks the video processor to
            sample (it passes ``config.num_frames``). ``None`` leaves it to the processor's own ``num_frames`` in
            uniform sampling; codec sampling takes the number of frames to select from (64), and refuses ``None``.

    The classification fields sit beside the encoder's, as transformers' other vision models do, so one
    config serves ``AutoModel`` (the encoder) and ``AutoModelForVideoClassification``; ``num_labels``,
    ``id2label`` and ``label2id`` are transformers' own.
    """

    model_type = "onevision_encoder"

    def __init__(
        self,
        hidden_size: int = 1024,
        intermediate_size: int = 4096,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_channels: int = 3,
        patch_size: int = 14,
        image_size: int = 448,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-6,
        layer_norm_type: str = "layer_norm",
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        rope_theta: float = 10000.0,
        rope_temporal_size: int = 64,
        use_head: bool = True,
        classifier_num_heads: int | None = None,
        classifier_mlp_ratio: int = 4,
        freeze_backbone: bool = True,
        label_smoothing: float = 0.0,
        num_frames: int | None = None,
        **kwargs: Any,
    ) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        head_dim = hidden_size // num_attention_heads
        if head_dim % 16:
            raise ValueError(
                f"head dimension hidden_size/num_attention_heads = {head_dim} must be a multiple of 16 "
                "so that each half head splits 4:6:6 between the t, h and w rotary axes"
            )
        if layer_norm_type not in LAYER_NORM_TYPES:
            raise ValueError(f"layer_norm_type must be one of {LAYER_NORM_TYPES}, got {layer_norm_type!r}")
        if classifier_num_heads is not None and (classifier_num_heads < 1 or hidden_size % classifier_num_heads):
            raise ValueError(
                f"classifier_num_heads ({classifier_num_heads}) must be a positive divisor of hidden_size "
                f"({hidden_size})"
            )
        if classifier_mlp_ratio < 1:
            raise ValueError(f"classifier_mlp_ratio must be >= 1, got {classifier_mlp_ratio}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}")
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm_type = layer_norm_type
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.rope_theta = rope_theta
        self.rope_temporal_size = rope_temporal_size
        self.use_head = use_head
        self.classifier_num_heads = classifier_num_heads
        self.classifier_mlp_ratio = classifier_mlp_ratio
        self.freeze_backbone = freeze_backbone
        self.label_smoothing = label_smoothing
        self.num_frames = num_frames
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> OneVisionEncoderConfig:
        """Config of a published size (``base``, ``large`` or ``huge``), with optional overrides."""
        if name not in MODEL_SIZES:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_SIZES)}")
        return cls(**{**MODEL_SIZES[name], **overrides})
