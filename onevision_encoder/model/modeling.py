"""The OneVision Encoder: a ViT with 3-D (t, h, w) rotary positions for images, clips and codec patches.

Semantics follow the published checkpoints exactly: patch embedding per frame, ``layernorm_pre``,
optional gather of visible patches, pre-norm blocks with the release's 3-D rotary embedding, then
``layernorm_post`` and an attention-pooling head when the config has ``use_head``. The state-dict
names are the published ones, so the released weights load as they are; ``tests/test_parity.py`` checks
the outputs against the reference implementation's on golden fixtures.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from ..video.grid import check_visible_indices, indices_to_positions
from .configuration import OneVisionEncoderConfig
from .loading import check_hub, damaged_weights_error, missing_folder_first

logger = logging.get_logger(__name__)

ATTENTION_BACKENDS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class PackedEncoderOutput(ModelOutput):
    """Output of :meth:`OneVisionEncoderModel.forward_packed`.

    ``last_hidden_state`` is ``[total, D]`` (packed, sample ``i`` at ``cu_seqlens[i]:cu_seqlens[i+1]``) or
    ``[B, max_len, D]`` with ``attention_mask`` (padded); ``hidden_states`` likewise, before ``layernorm_post``.
    ``pooler_output`` is ``None`` when the head was not asked for (``output_pooler=False``) or the model has none.
    """

    last_hidden_state: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None
    positions_thw: torch.Tensor | None = None

    def split(self, states: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each sample's ``[N_i, D]`` rows of ``states`` (default: ``last_hidden_state``)."""
        states = self.last_hidden_state if states is None else states
        lengths = self.cu_seqlens.diff().tolist()
        if self.attention_mask is not None:
            return [row[:length] for row, length in zip(states, lengths, strict=True)]
        return list(states.split(lengths))


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model: names the missing, unexpected and mis-shaped ones."""


def make_norm(config: OneVisionEncoderConfig) -> nn.Module:
    if config.layer_norm_type == "rms_norm":
        return nn.RMSNorm(config.hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class OneVisionEncoderEmbeddings(nn.Module):
    """Patch embedding (Conv2d without bias), applied to each frame on its own."""

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size, bias=False
        )

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> tokens ``[B, T*Hp*Wp, D]``, frame-major then row then column."""
        batch, channels, frames, height, width = clip.shape
        frames_first = clip.transpose(1, 2).reshape(batch * frames, channels, height, width)
        tokens = self.patch_embedding(frames_first.to(self.patch_embedding.weight.dtype))
        tokens = tokens.flatten(2).transpose(1, 2)
        return tokens.reshape(batch, -1, tokens.shape[-1])


class OneVisionEncoderRotaryEmbedding(nn.Module):
    """3-D rotary angles with the release's layout.

    Each half head is split 4:6:6 between t, h and w; axis ``a`` of ``n_a`` channels uses
    ``theta ** (-j / n_a)``. Frequencies are computed on every call rather than stored in buffers,
    so meta-device loading (transformers 5) cannot leave them uninitialised.
    """

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        half = config.hidden_size // config.num_attention_heads // 2
        self.axis_sizes = (4 * half // 16, 6 * half // 16, 6 * half // 16)
        self.theta = config.rope_theta

    def inverse_frequencies(self, device: torch.device) -> list[torch.Tensor]:
        return [
            self.theta ** -(torch.arange(size, device=device, dtype=torch.float32) / size) for size in self.axis_sizes
        ]

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [B, N, 3]`` -> ``cos, sin`` each ``[B, N, head_dim]`` in float32."""
        positions = positions.float()
        freqs = torch.cat(
            [positions[..., axis, None] * inv for axis, inv in enumerate(self.inverse_frequencies(positions.device))],
            dim=-1,
        )
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """Interleaved rotation: each pair ``(x[2i], x[2i+1])`` becomes ``(-x[2i+1], x[2i])``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B, heads, N, head_dim]`` with ``cos, sin [B, N, head_dim]``, or packed ``x [total, heads, head_dim]``
    with ``cos, sin [total, head_dim]`` (cast to ``x``'s dtype as the release does)."""
    cos = cos.unsqueeze(1 if cos.ndim == 3 else -2).to(x.dtype)
    sin = sin.unsqueeze(1 if sin.ndim == 3 else -2).to(x.dtype)
    return x * cos + rotate_pairs(x) * sin


def check_attention_backend(
    name: str | None, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> str:
    """Resolve ``attn_implementation`` (``None`` means ``sdpa``); raise if it cannot run here."""
    name = name or "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attn_implementation {name!r} is not supported; choose one of {ATTENTION_BACKENDS}")
    if name == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ImportError(
                "attn_implementation='flash_attention_2' needs the flash-attn package: pip install flash-attn"
            )
        if device is not None and device.type != "cuda":
            raise RuntimeError(
                f"attn_implementation='flash_attention_2' runs on CUDA only, but the input is on {device}"
            )
        if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError(f"attn_implementation='flash_attention_2' needs float16 or bfloat16, got {dtype}")
    return name


@dataclass
class TokenLayout:
    """How the tokens of several samples share one tensor.

    ``packed``: ``[total, D]`` rows, sample ``i`` at ``cu_seqlens[i]:cu_seqlens[i + 1]``; attention runs per
    group of equal-length samples (never a dense mask) or with flash-attn's varlen kernel.
    ``padded``: ``[B, max_len, D]`` with ``valid [B, max_len]`` marking real tokens (a key-padding mask).
    """

    lengths: list[int]
    cu_seqlens: torch.Tensor
    padded: bool = False
    valid: torch.Tensor | None = None
    groups: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)

    @classmethod
    def from_lengths(cls, lengths: list[int], device: torch.device | None = None, padded: bool = False) -> TokenLayout:
        if not lengths:
            raise ValueError("no samples: at least one sequence is needed")
        if any(not isinstance(n, int) or n < 1 for n in lengths):
            raise ValueError(f"every sequence length must be a positive integer, got {lengths}")
        # Offsets summed in Python, not read back from a tensor, so that torch.compile traces them as sizes.
        offsets = [0, *itertools.accumulate(lengths)]
        cu_seqlens = torch.tensor(offsets, dtype=torch.int32, device=device)
        layout = cls(list(lengths), cu_seqlens, padded)
        if padded:
            layout.valid = (
                torch.arange(max(lengths), device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
            )
            return layout
        # Grouped by comparing lengths, not hashing them: under torch.compile with dynamic shapes a hash fixes each
        # length in the graph, while a comparison only fixes which samples are equal.
        by_length: list[tuple[int, list[int]]] = []
        for index, length in enumerate(lengths):
            members = next((members for known, members in by_length if known == length), None)
            if members is None:
                by_length.append((length, [index]))
            else:
                members.append(index)
        for length, members in by_length:
            rows = torch.cat([torch.arange(offsets[i], offsets[i] + length) for i in members])
            layout.groups.append((members, rows.to(device)))
        return layout

    @classmethod
    def from_cu_seqlens(cls, cu_seqlens: torch.Tensor, total: int) -> TokenLayout:
        """Validate cumulative sequence lengths ``[n + 1]`` for a packed tensor of ``total`` rows."""
        cu = torch.as_tensor(cu_seqlens).long().cpu()
        if cu.ndim != 1 or cu.numel() < 2:
            raise ValueError(f"cu_seqlens must be 1-D with at least 2 entries, got shape {tuple(cu.shape)}")
        if int(cu[0]) != 0 or int(cu[-1]) != total:
            raise ValueError(f"cu_seqlens must start at 0 and end at the {total} packed tokens, got {cu.tolist()}")
        lengths = cu.diff().tolist()
        if min(lengths) < 1:
            raise ValueError(f"cu_seqlens must be strictly increasing (every segment non-empty), got {cu.tolist()}")
        return cls.from_lengths(lengths)

    @property
    def max_seqlen(self) -> int:
        return max(self.lengths)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over ``[B, heads, N, head_dim]``, called as transformers calls its attention functions.

    ``attention_mask [B, 1, 1, N]`` (True = real token) hides padding. Returns ``[B, N, heads, head_dim]`` and the
    weights ``[B, heads, N, N]``.
    """
    scores = (query @ key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = scores.float().softmax(dim=-1).to(query.dtype)
    out = F.dropout(weights, p=dropout, training=dropout > 0) @ value
    return out.transpose(1, 2).contiguous(), weights


def attention_function(backend: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """The function of a backend that :func:`check_attention_backend` accepted: ours for eager, otherwise the one
    registered in transformers' ``ALL_ATTENTION_FUNCTIONS`` (looked up at each call, so re-registering applies)."""
    return eager_attention_forward if backend == "eager" else ALL_ATTENTION_FUNCTIONS[backend]


class OneVisionEncoderAttention(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False  # transformers' attention functions read it
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        output_attentions: bool = False,
        layout: TokenLayout | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Self-attention with the backend of ``config._attn_implementation``, read at every call.

        ``output_attentions=True`` computes this call with eager, the only backend that returns the weights
        (:meth:`OneVisionEncoderModel.forward` warns when that is not the configured backend).
        """
        dropout = self.config.attention_dropout if self.training else 0.0
        backend = check_attention_backend(self.config._attn_implementation, hidden_states.device, hidden_states.dtype)
        if layout is not None and not layout.padded:
            return self.out_proj(self._packed(hidden_states, cos, sin, layout, backend, dropout)), None
        if backend == "flash_attention_2" and layout is not None:
            raise ValueError(
                "flash_attention_2 takes packed sequences, not padded ones: use forward_packed without padded=True"
            )
        batch, length, _ = hidden_states.shape
        split = (batch, length, self.num_heads, self.head_dim)
        q = apply_rotary(self.q_proj(hidden_states).view(split).transpose(1, 2), cos, sin)
        k = apply_rotary(self.k_proj(hidden_states).view(split).transpose(1, 2), cos, sin)
        v = self.v_proj(hidden_states).view(split).transpose(1, 2)
        mask = None if layout is None else layout.valid[:, None, None, :]
        attention = attention_function("eager" if output_attentions else backend)
        out, weights = attention(self, q, k, v, mask, dropout=dropout, scaling=self.scale, is_causal=False)
        return self.out_proj(out.reshape(batch, length, -1)), (weights if output_attentions else None)

    def _packed(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layout: TokenLayout,
        backend: str,
        dropout: float,
    ) -> torch.Tensor:
        """``[total, D]`` tokens of several samples, each attending only within itself."""
        split = (hidden.shape[0], self.num_heads, self.head_dim)
        q = apply_rotary(self.q_proj(hidden).view(split), cos, sin)
        k = apply_rotary(self.k_proj(hidden).view(split), cos, sin)
        v = self.v_proj(hidden).view(split)
        attention = attention_function(backend)
        if backend == "flash_attention_2":
            # One batch row of all the tokens, cut by cu_seqlens: transformers calls flash-attn's varlen kernel.
            cu = layout.cu_seqlens.to(hidden.device, torch.int32)
            out, _ = attention(
                self,
                *(t.transpose(0, 1)[None] for t in (q, k, v)),
                None,
                dropout=dropout,
                scaling=self.scale,
                is_causal=False,
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu,
                max_length_q=layout.max_seqlen,
                max_length_k=layout.max_seqlen,
            )
            return out.reshape(hidden.shape[0], -1)
        out = torch.empty_like(q)
        for members, rows in layout.groups:
            # Samples of equal length attend as one dense batch: exact, and no mask is ever built.
            shape = (len(members), -1, self.num_heads, self.head_dim)
            grouped = [t[rows].view(shape).transpose(1, 2) for t in (q, k, v)]
            result, _ = attention(self, *grouped, None, dropout=dropout, scaling=self.scale, is_causal=False)
            out[rows] = result.reshape(-1, self.num_heads, self.head_dim)
        return out.reshape(hidden.shape[0], -1)


class OneVisionEncoderMLP(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OneVisionEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``.

    Activation checkpointing (``gradient_checkpointing_enable`` and its options) checkpoints each block.
    """

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.layer_norm1 = make_norm(config)
        self.self_attn = OneVisionEncoderAttention(config)
        self.layer_norm2 = make_norm(config)
        self.mlp = OneVisionEncoderMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        output_attentions: bool = False,
        layout: TokenLayout | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.self_attn(self.layer_norm1(hidden_states), cos, sin, output_attentions, layout)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, weights


class OneVisionEncoderEncoder(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(OneVisionEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        layout: TokenLayout | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            # The tensors positional: a checkpointed layer (use_reentrant=True) passes gradients through those only.
            hidden_states, weights = layer(hidden_states, cos, sin, output_attentions=output_attentions, layout=layout)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(weights)
        return (
            hidden_states,
            tuple(all_hidden) if all_hidden is not None else None,
            tuple(all_attentions) if all_attentions is not None else None,
        )


def attention_pool(
    tokens: torch.Tensor,
    query: torch.Tensor,
    attention: nn.MultiheadAttention,
    norm: nn.Module,
    mlp: nn.Module,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention pooling: one learned ``query [1, 1, D]`` (cast to the tokens' dtype) attends over ``tokens [B, N, D]``
    (``key_padding_mask [B, N]``, True = padding, leaves tokens out); then ``a + mlp(norm(a))``. Returns ``[B, D]``.

    The model's pooling head and the attentive probe
    (:class:`~onevision_encoder.model.classification.AttentiveProbe`) both pool this way, each with its own weights.
    """
    query = query.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
    pooled = attention(query, tokens, tokens, key_padding_mask=key_padding_mask, need_weights=False)[0]
    pooled = pooled + mlp(norm(pooled))
    return pooled[:, 0]


class OneVisionEncoderPoolingHead(nn.Module):
    """One learned query attends over all tokens; then ``a + mlp(rmsnorm(a))`` (:func:`attention_pool`)."""

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_attention_heads, batch_first=True)
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = OneVisionEncoderMLP(config)

    def forward(self, hidden_states: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        """``[B, N, D]`` (or packed / padded by ``layout``) -> ``[samples, D]``, each pooled over its own tokens."""
        if layout is not None and not layout.padded:
            pooled = hidden_states.new_empty(len(layout.lengths), hidden_states.shape[-1])
            for members, rows in layout.groups:
                pooled[members] = self(hidden_states[rows].view(len(members), -1, hidden_states.shape[-1]))
            return pooled
        padding = None if layout is None else ~layout.valid
        return attention_pool(hidden_states, self.probe, self.attention, self.norm, self.mlp, padding)


class OneVisionEncoderPreTrainedModel(PreTrainedModel):
    config_class = OneVisionEncoderConfig
    base_model_prefix = "onevision_encoder"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OneVisionEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    # Not a serving backend (vLLM, TGI): forward takes no attention kwargs and only ATTENTION_BACKENDS run.
    _supports_attention_backend = False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses this by searching the module's source for its own dispatch idiom (a different one in
        # 4.57 and 5.x); here every attention call looks its backend up from config._attn_implementation.
        return True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """transformers' check of a requested backend (``None`` is sdpa), then ours: only ``ATTENTION_BACKENDS``."""
        backend = super().get_correct_attn_implementation(requested_attention, is_init_check)
        return check_attention_backend(backend)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.xavier_uniform_(module.in_proj_weight)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, OneVisionEncoderPoolingHead):
            nn.init.normal_(module.probe, mean=0.0, std=std)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str] | None, *args: Any, **kwargs: Any
    ) -> Any:
        """``PreTrainedModel.from_pretrained`` that refuses checkpoints whose weights do not fit.

        Missing and unexpected weights raise :class:`CheckpointMismatchError` naming them (transformers only
        logs them); ``strict=False`` loads anyway. Mis-shaped weights raise it too, whatever ``strict``, unless
        ``ignore_mismatched_sizes=True`` asks for them to be re-initialised. ``None`` with ``config=`` and
        ``state_dict=`` loads those weights, checked the same way. A damaged weights file raises
        :class:`DamagedCheckpointError` naming it; a hub id while the Hub cannot be reached loads from the local
        cache, or raises :class:`HubUnreachableError` within seconds.
        """
        strict = kwargs.pop("strict", True)
        want_info = kwargs.pop("output_loading_info", False)
        reinitialise_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        # transformers then collects the mis-shaped weights (named below) instead of raising without their names.
        checked = {"output_loading_info": True, "ignore_mismatched_sizes": True}
        if pretrained_model_name_or_path is None:  # weights from state_dict=: no folder, hub id or file to read
            model, info = super().from_pretrained(None, *args, **checked, **kwargs)
        else:
            location = os.fspath(pretrained_model_name_or_path)
            folder = os.path.isdir(os.path.expanduser(location))
            if location.startswith((".", os.sep, "~")) and not folder:
                raise FileNotFoundError(f"{location}: no such checkpoint folder")
            with missing_folder_first(location):
                if not folder:  # a hub id: one short request first, so an unreachable Hub fails in seconds
                    kwargs = check_hub(location, kwargs)
                try:
                    model, info = super().from_pretrained(pretrained_model_name_or_path, *args, **checked, **kwargs)
                except SafetensorError as error:
                    raise damaged_weights_error(location, kwargs, error) from error
        refused = [
            (field, label, remedy)
            for field, label, remedy, allowed in (
                ("missing_keys", "missing weights", "strict=False to load it anyway", not strict),
                ("unexpected_keys", "unexpected weights", "strict=False to load it anyway", not strict),
                (
                    "mismatched_keys",
                    "mis-shaped weights",
                    "ignore_mismatched_sizes=True to re-initialise the mis-shaped weights",
                    reinitialise_mismatched,
                ),
            )
            if info.get(field) and not allowed
        ]
        if refused:
            problems = "; ".join(
                f"{label}: {', '.join(sorted(_describe_key(key) for key in info[field]))}"
                for field, label, _ in refused
            )
            remedies = " or ".join(dict.fromkeys(remedy for _, _, remedy in refused))
            source = "the state_dict" if pretrained_model_name_or_path is None else pretrained_model_name_or_path
            raise CheckpointMismatchError(
                f"checkpoint {source} does not fit {cls.__name__} ({problems}); pass {remedies}"
            )
        return (model, info) if want_info else model


def _describe_key(entry: Any) -> str:
    """A loading-info entry: a key, or ``(key, checkpoint_shape, model_shape)`` for mis-shaped weights."""
    if isinstance(entry, (tuple, list)):
        key, checkpoint_shape, model_shape = entry
        return f"{key} (checkpoint {tuple(checkpoint_shape)}, model {tuple(model_shape)})"
    return str(entry)


class OneVisionEncoderModel(OneVisionEncoderPreTrainedModel):
    """The OneVision Encoder backbone (published state-dict keys).

    ``pixel_values`` is ``[B, C, H, W]`` (images at any multiple of the patch size) or
    ``[B, C, T, H, W]`` (clips, placed on the ``rope_temporal_size``-frame virtual grid).
    ``visible_indices`` ``[B, N]`` (or ``[N]`` for every sample) are flat grid indices
    ``t*Hp*Wp + h*Wp + w``: when ``N`` differs from the input's ``T*Hp*Wp`` patches they select
    (gather) those patches; when equal, the patches are used in the order given and the indices
    only place them (chunks on the virtual grid, pre-gathered mosaics). ``patch_positions``
    ``[B, N, 3]`` gives (t, h, w) rotary positions directly.

    ``output_pooler=False`` leaves the pooling head out of the forward (``pooler_output`` is then ``None``;
    ``last_hidden_state`` is the same, ``layernorm_post`` included): callers that use only the patch features
    save its time. Its parameters still exist and get no gradient, so a DDP run that trains on patch features
    freezes them (``model.head.requires_grad_(False)``), as the video classifier and the LMM tower do.
    """

    # A video classifier's folder holds the encoder and its attentive-probe head (``probe.*``): loaded as the
    # encoder, the head is left out, as transformers' base models leave out their task heads.
    _keys_to_ignore_on_load_unexpected = [r"^probe\."]

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__(config)
        self.embeddings = OneVisionEncoderEmbeddings(config)
        self.layernorm_pre = make_norm(config)
        self.rotary = OneVisionEncoderRotaryEmbedding(config)
        self.encoder = OneVisionEncoderEncoder(config)
        if config.use_head:
            self.layernorm_post = make_norm(config)
            self.head = OneVisionEncoderPoolingHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor,
        visible_indices: torch.Tensor | None = None,
        patch_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_pooler: bool = True,
        **unused: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        if unused:
            raise TypeError(f"unexpected arguments to OneVisionEncoderModel.forward: {sorted(unused)}")
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        backend = check_attention_backend(config._attn_implementation)
        if output_attentions and backend != "eager":
            logger.warning_once(
                f"output_attentions=True: the {backend} attention backend does not return attention weights, so "
                "attention is computed with eager for such calls (the same outputs, with more time and memory); "
                "load with attn_implementation='eager' or call model.set_attn_implementation('eager') to make it "
                "the backend"
            )

        hidden_states, positions = self.embed_inputs(pixel_values, visible_indices, patch_positions)
        cos, sin = self.rotary(positions)
        hidden_states, all_hidden, all_attentions = self.encoder(
            hidden_states, cos, sin, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        hidden_states, pooled = self._pool(hidden_states, output_pooler=output_pooler)

        if not return_dict:
            return tuple(v for v in (hidden_states, pooled, all_hidden, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )

    def _pool(
        self, hidden_states: torch.Tensor, layout: TokenLayout | None = None, output_pooler: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's output -> ``(last_hidden_state, pooler_output)``: ``layernorm_post`` and, with
        ``output_pooler``, the pooling head (each sample over its own tokens of ``layout``) when ``config.use_head``;
        else the output as is and ``None``."""
        if not self.config.use_head:
            return hidden_states, None
        hidden_states = self.layernorm_post(hidden_states)
        return hidden_states, (self.head(hidden_states, layout) if output_pooler else None)

    def embed_inputs(
        self,
        pixel_values: torch.Tensor,
        visible_indices: torch.Tensor | None = None,
        patch_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated inputs -> pre-normed visible tokens ``[B, N, D]`` and their (t, h, w) positions ``[B, N, 3]``."""
        clip, grid_frames = self._as_clip(pixel_values)
        batch, _, frames, height, width = clip.shape
        grid_hw = (height // self.config.patch_size, width // self.config.patch_size)
        num_patches = frames * grid_hw[0] * grid_hw[1]

        gather = False
        if visible_indices is not None:
            # Sparse indices select patches of this clip; a full set only places them on the grid.
            if not isinstance(visible_indices, torch.Tensor):
                visible_indices = torch.as_tensor(np.asarray(visible_indices))
            if visible_indices.ndim not in (1, 2):
                raise ValueError(f"visible_indices must have shape [N] or [B, N], got {tuple(visible_indices.shape)}")
            count = visible_indices.shape[-1]
            gather = count != num_patches
            limit = num_patches if gather else max(grid_frames, frames) * grid_hw[0] * grid_hw[1]
            visible_indices = check_visible_indices(visible_indices, batch, limit).to(clip.device)

        if patch_positions is not None:
            positions = self._check_positions(patch_positions, batch, num_patches, visible_indices)
        elif visible_indices is not None:
            positions = indices_to_positions(visible_indices, grid_hw)
        else:
            positions = indices_to_positions(torch.arange(num_patches, device=clip.device), grid_hw)
            positions = positions.expand(batch, -1, -1)

        hidden_states = self.layernorm_pre(self.embeddings(clip))
        if gather:
            hidden_states = hidden_states.gather(1, visible_indices[..., None].expand(-1, -1, hidden_states.shape[-1]))
        return hidden_states, positions.to(clip.device)

    def forward_packed(
        self,
        samples: list[dict[str, torch.Tensor]],
        padded: bool = False,
        output_hidden_states: bool = False,
        output_pooler: bool = True,
    ) -> PackedEncoderOutput:
        """One forward over samples of different sizes, each attending only to its own tokens.

        Each sample is a dict with ``pixel_values`` (an image ``[C, H, W]`` or a clip ``[C, T, H, W]``) and
        optional ``visible_indices [N]`` / ``patch_positions [N, 3]``, with the meaning of :meth:`forward`.
        By default the tokens are packed, concatenated (``[total, D]`` with ``cu_seqlens``): flash-attn's varlen
        kernel on CUDA, otherwise samples of equal length attend as one dense batch, so no mask is built.
        ``padded=True`` pads to the longest sample (``[B, max_len, D]``) and masks the padding. Numerically the
        same as running every sample alone. ``output_pooler=False`` leaves the pooling head out, as in :meth:`forward`.
        """
        if not isinstance(samples, (list, tuple)):
            raise TypeError(
                f"samples must be a list of dicts (one per sample, each with 'pixel_values'), got "
                f"{type(samples).__name__}; for a batch tensor call the model itself"
            )
        if not samples:
            raise ValueError("forward_packed needs at least one sample")
        tokens, positions = [], []
        for number, sample in enumerate(samples):
            if not isinstance(sample, dict) or "pixel_values" not in sample:
                raise ValueError(f"sample {number} must be a dict with 'pixel_values'")
            pixels = sample["pixel_values"]
            if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (3, 4):
                shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
                raise ValueError(f"sample {number}: pixel_values must be [C, H, W] or [C, T, H, W], got {shape}")
            if pixels.shape[0] != self.config.num_channels:
                raise ValueError(
                    f"sample {number}: pixel_values has {pixels.shape[0]} channels in dimension 0, the model expects "
                    f"{self.config.num_channels} (layout [C, H, W] or [C, T, H, W])"
                )
            extras = {}
            for key, rank in (("visible_indices", 1), ("patch_positions", 2)):
                if sample.get(key) is not None:
                    value = torch.as_tensor(sample[key])
                    if value.ndim != rank:
                        raise ValueError(
                            f"sample {number}: {key} must have {rank} dimension(s), got {tuple(value.shape)}"
                        )
                    extras[key] = value[None]
            try:
                hidden, where = self.embed_inputs(pixels[None], **extras)
            except (ValueError, TypeError) as error:
                raise type(error)(f"sample {number}: {error}") from None
            tokens.append(hidden[0])
            positions.append(where[0])
        lengths = [t.shape[0] for t in tokens]
        layout = TokenLayout.from_lengths(lengths, tokens[0].device, padded=padded)
        if not padded:
            hidden_states, where = torch.cat(tokens), torch.cat(positions)
        else:
            hidden_states = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True)
            where = torch.nn.utils.rnn.pad_sequence(positions, batch_first=True)
        cos, sin = self.rotary(where)
        hidden_states, all_hidden, _ = self.encoder(
            hidden_states, cos, sin, output_hidden_states=output_hidden_states, layout=layout
        )
        hidden_states, pooled = self._pool(hidden_states, layout, output_pooler)
        return PackedEncoderOutput(
            last_hidden_state=hidden_states,
            cu_seqlens=layout.cu_seqlens,
            pooler_output=pooled,
            hidden_states=all_hidden,
            attention_mask=layout.valid,
            positions_thw=where,
        )

    def _as_clip(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Validate ``pixel_values``; return it as ``[B, C, T, H, W]`` and the rotary grid's frame count."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if pixel_values.ndim not in (4, 5):
            raise ValueError(
                f"pixel_values must be [B, C, H, W] (images) or [B, C, T, H, W] (clips), got shape "
                f"{tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(
                f"pixel_values holds no sample (shape {tuple(pixel_values.shape)}): at least one image or clip "
                "is needed"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values has dtype {pixel_values.dtype}; the model takes floating-point pixels normalised "
                "with the processor's mean and std, not raw values: prepare images and clips with "
                "OneVisionEncoderImageProcessor (processor(images=...)['pixel_values'])"
            )
        channels = pixel_values.shape[1]
        if channels != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels in dimension 1, the model expects {self.config.num_channels} "
                "(layout [B, C, H, W] or [B, C, T, H, W])"
            )
        height, width = pixel_values.shape[-2:]
        p = self.config.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(
                f"pixel_values has height x width {height}x{width}; both must be a positive multiple of the patch "
                f"size {p} (OneVisionEncoderImageProcessor resizes and crops to such sizes)"
            )
        if pixel_values.ndim == 4:
            return pixel_values.unsqueeze(2), 1
        if pixel_values.shape[2] == 0:
            raise ValueError("pixel_values has no frames")
        return pixel_values, self.config.rope_temporal_size

    @staticmethod
    def _check_positions(
        patch_positions: torch.Tensor, batch: int, num_patches: int, visible_indices: torch.Tensor | None
    ) -> torch.Tensor:
        positions = torch.as_tensor(patch_positions)
        count = visible_indices.shape[1] if visible_indices is not None else num_patches
        if positions.ndim == 2:
            positions = positions.unsqueeze(0).expand(batch, -1, -1)
        if positions.shape != (batch, count, 3):
            raise ValueError(
                f"patch_positions must have shape [B={batch}, N={count}, 3] (one (t, h, w) per visible patch), "
                f"got {tuple(positions.shape)}"
            )
        if positions.is_complex() or positions.dtype == torch.bool:
            raise ValueError(f"patch_positions must be real numbers, got dtype {positions.dtype}")
        return positions
