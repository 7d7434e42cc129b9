"""Video (and image) classification: the encoder with the attentive probe of ``onevision probe`` as its head."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import logging

from .configuration import OneVisionEncoderConfig
from .modeling import OneVisionEncoderModel, OneVisionEncoderPreTrainedModel, attention_pool

logger = logging.get_logger(__name__)

HEAD = "probe"  # the head's attribute, so its weights are ``probe.*`` (the AttentiveProbe's own names inside)


class AttentiveProbe(nn.Module):
    """The probe of ``onevision probe``: one learned query attends over all tokens (``dim / 64`` heads unless
    ``num_heads``), then a residual RMSNorm + MLP(``mlp_ratio * dim``), LayerNorm and a linear classifier."""

    def __init__(self, dim: int, num_classes: int, num_heads: int | None = None, mlp_ratio: int = 4) -> None:
        super().__init__()
        heads = num_heads or max(1, dim // 64)
        if dim % heads:
            raise ValueError(f"feature width {dim} is not divisible by {heads} heads")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.RMSNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.final_norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        with torch.no_grad():  # small initial logits, as the release
            self.classifier.weight.mul_(1e-3)
            self.classifier.bias.mul_(1e-3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, N, D]`` -> logits ``[B, num_classes]``."""
        pooled = attention_pool(tokens, self.query, self.attention, self.norm, self.mlp)
        return self.classifier(self.final_norm(pooled))


class OneVisionEncoderForVideoClassification(OneVisionEncoderPreTrainedModel):
    """The OneVision Encoder with an attentive probe over all its tokens, for clips and images.

    The head is :class:`AttentiveProbe`, the very module ``onevision probe`` trains: one learned query attends over the
    encoder's ``last_hidden_state``, then a residual RMSNorm + MLP, LayerNorm and a linear classifier with
    ``config.num_labels`` outputs. Its shape comes from the config's ``classifier_*`` fields, and
    ``config.freeze_backbone`` (default ``True``) keeps the encoder frozen: in eval mode, run without
    gradient, its parameters not requiring one, so only the probe trains, as in ``onevision probe``.

    The encoder sits under ``onevision_encoder`` (``base_model_prefix``), so ``from_pretrained`` on an
    encoder checkpoint loads its weights and starts a new head; on a folder this class saved, every
    weight (head included) must be present.

    ``forward`` takes what :class:`OneVisionEncoderModel` takes (images ``[B, C, H, W]``, clips
    ``[B, C, T, H, W]``, ``visible_indices``, ``patch_positions``) plus ``labels [B]`` (class indices),
    which adds the cross-entropy ``loss`` (with ``config.label_smoothing``).
    """

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__(config)
        if config.problem_type not in (None, "single_label_classification"):
            raise ValueError(
                f"OneVisionEncoderForVideoClassification is a single-label classifier (cross-entropy); "
                f"problem_type {config.problem_type!r} is not supported"
            )
        self.num_labels = config.num_labels
        self.onevision_encoder = OneVisionEncoderModel(config)
        self.probe = AttentiveProbe(
            config.hidden_size, config.num_labels, config.classifier_num_heads, config.classifier_mlp_ratio
        )
        self.post_init()
        self._freeze_backbone()
        self._new_head = type(self).__name__ not in (config.architectures or [])
        if self._new_head:
            # Not a checkpoint of this class (an encoder's, or none yet): it has no head to load, so the new
            # head's weights are expected to be missing. A checkpoint of this class must hold them all.
            self._keys_to_ignore_on_load_missing = {rf"^{HEAD}\."}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        """As :meth:`OneVisionEncoderModel.from_pretrained`; an encoder checkpoint gets a new head (warned)."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model._freeze_backbone()  # transformers 5 loads weights as new parameters, which require gradients
        if model._new_head:
            logger.warning(
                f"{pretrained_model_name_or_path} is not a {cls.__name__} checkpoint: the encoder's weights were "
                f"loaded and the classification head ({HEAD}.*, {model.config.num_labels} labels) is new; train it "
                "before using its predictions"
            )
        return loaded

    def _freeze_backbone(self) -> None:
        if self.config.freeze_backbone:
            self.onevision_encoder.requires_grad_(False)
        elif self.config.use_head:
            # The probe reads the encoder's tokens, never its pooling head: frozen, so that fine-tuning under DDP
            # finds a gradient for every trainable parameter.
            self.onevision_encoder.head.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, AttentiveProbe):
            # The probe's own start (AttentiveProbe.__init__): a small query and near-zero logits.
            nn.init.trunc_normal_(module.query, std=0.02)
            nn.init.normal_(module.classifier.weight, std=self.config.initializer_range * 1e-3)
            nn.init.zeros_(module.classifier.bias)

    def train(self, mode: bool = True) -> OneVisionEncoderForVideoClassification:
        super().train(mode)
        if self.config.freeze_backbone:  # frozen features are the encoder's inference features (no dropout)
            self.onevision_encoder.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        visible_indices: torch.Tensor | None = None,
        patch_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple[torch.Tensor, ...]:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_backbone):
            encoded = self.onevision_encoder(
                pixel_values=pixel_values,
                visible_indices=visible_indices,
                patch_positions=patch_positions,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                output_pooler=False,
            )
        tokens = encoded.last_hidden_state
        parameter = self.probe.classifier.weight
        logits = self.probe(tokens.to(parameter.dtype))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float(), labels.to(logits.device).long(), label_smoothing=self.config.label_smoothing
            )
        if not return_dict:
            rest = tuple(v for v in (encoded.hidden_states, encoded.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits, *rest)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
