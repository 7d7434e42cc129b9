"""The LMM probe: the encoder as the vision tower of a LLaVA-style generating model.

The encoder reads every image (native resolution) and codec video (packed mosaics with their (t, h, w)
positions) of a batch in one packed forward; ``hidden_states[vision_feature_layer]`` is merged 2x2 per
frame, projected by a 2-layer GELU MLP into the language model's width, and written over the placeholder
tokens of the language model's input embeddings.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import ModelOutput

from ..model.configuration import OneVisionEncoderConfig
from ..model.modeling import OneVisionEncoderModel
from .tower import TowerFeatures, vision_tower_features

try:  # transformers >= 5 declares nested configs with specs; 4.x with a plain ``sub_configs`` mapping
    from transformers.configuration_utils import SubConfigSpec
except ImportError:
    SubConfigSpec = None

DEFAULT_TEXT_MODEL_TYPE = "qwen2"
VISION_INPUTS = ("pixel_values", "pixel_values_videos", "video_positions_thw")
# The parts of the LMM that train or stay frozen, and their attributes on the model.
PART_MODULES = {
    "vision_tower": "vision_tower",
    "projector": "multi_modal_projector",
    "language_model": "language_model",
}


def vision_token_count(shape: tuple[int, ...] | torch.Size, patch_size: int, spatial_merge: int) -> int:
    """Language-model tokens the tower makes for one image ``[C, H, W]`` or video ``[T, C, H, W]``.

    Every frame's ``H/p x W/p`` patch grid is merged in ``m x m`` blocks (:func:`vision_tower_features`), so
    ``T * (H/p/m) * (W/p/m)``; a side that is not a multiple of ``p * m`` is refused, as the tower refuses it.
    """
    side = patch_size * spatial_merge
    height, width = shape[-2:]
    if height % side or width % side:
        raise ValueError(
            f"a {height}x{width} frame does not split into {side}x{side} pixel blocks (patch {patch_size}, "
            f"merge {spatial_merge}): sides must be multiples of {side}"
        )
    frames = shape[0] if len(shape) == 4 else 1
    return frames * (height // side) * (width // side)


def _text_config(value: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"text_config must be a config or a dict, got {type(value).__name__}")
    settings = dict(value or {})
    model_type = settings.pop("model_type", DEFAULT_TEXT_MODEL_TYPE)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"text_config: unknown model_type {model_type!r} (neither transformers' nor registered)")
    return CONFIG_MAPPING[model_type](**settings)


def _vision_config(value: OneVisionEncoderConfig | dict[str, Any] | None) -> OneVisionEncoderConfig:
    if isinstance(value, OneVisionEncoderConfig):
        return value
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"vision_config must be a OneVisionEncoderConfig or a dict, got {type(value).__name__}")
    return OneVisionEncoderConfig(**{key: v for key, v in (value or {}).items() if key != "model_type"})


class OneVisionLlavaConfig(PretrainedConfig):
    """Configuration of :class:`OneVisionLlavaForConditionalGeneration`.

    Args:
        vision_config: The encoder's :class:`OneVisionEncoderConfig` (or its dict); default the ``large`` encoder.
        text_config: Any transformers causal-LM config, or its dict with ``model_type`` (default ``qwen2``).
        vision_feature_layer: Encoder hidden state fed to the projector (the release's LLaVA uses -2).
        spatial_merge: Side of the per-frame token blocks concatenated into one (2: four patches per LM token).
        projector_hidden_size: Hidden width of the projector; ``None`` takes the language model's width. Its input
            is ``vision hidden * spatial_merge**2`` wide and its output the language model's width.
        projector_hidden_act: Activation between the projector's two linear layers.
        image_token_id: Placeholder token whose embeddings are replaced by image tokens (one per merged token).
        video_token_id: Placeholder token whose embeddings are replaced by video tokens.
    """

    model_type = "onevision_llava"
    if SubConfigSpec is None:
        sub_configs = {"vision_config": OneVisionEncoderConfig, "text_config": AutoConfig}
    else:
        sub_configs_defaults = {
            "vision_config": OneVisionEncoderConfig,
            "text_config": SubConfigSpec(config_class=AutoConfig, model_type=DEFAULT_TEXT_MODEL_TYPE),
        }

    def __init__(
        self,
        vision_config: OneVisionEncoderConfig | dict[str, Any] | None = None,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        vision_feature_layer: int = -2,
        spatial_merge: int = 2,
        projector_hidden_size: int | None = None,
        projector_hidden_act: str = "gelu",
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        if spatial_merge < 1:
            raise ValueError(f"spatial_merge must be >= 1, got {spatial_merge}")
        self.vision_config = _vision_config(vision_config)
        self.text_config = _text_config(text_config)
        self.vision_feature_layer = vision_feature_layer
        self.spatial_merge = spatial_merge
        self.projector_hidden_size = projector_hidden_size
        self.projector_hidden_act = projector_hidden_act
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        super().__init__(**kwargs)


class OneVisionLlavaProjector(nn.Module):
    """Merged tower tokens -> language-model embeddings: Linear, GELU, Linear (the release's projector)."""

    def __init__(self, config: OneVisionLlavaConfig) -> None:
        super().__init__()
        width = config.text_config.hidden_size
        hidden = config.projector_hidden_size or width
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * config.spatial_merge**2, hidden)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class OneVisionLlavaForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """The OneVision Encoder, a projector and any transformers causal language model, trainable and generating.

    Vision inputs (each optional; at least ``input_ids`` tells where they go):

    - ``pixel_values``: a list of images ``[C, H, W]``, each at its own (native) resolution, sides multiples of
      ``patch_size * spatial_merge``; in the order of their ``image_token_id`` placeholders in ``input_ids``
      (row by row: all of sample 0's, then sample 1's, ...). Each gives ``(H/p/m) * (W/p/m)`` tokens.
    - ``pixel_values_videos``: a list of videos ``[T, C, H, W]``, e.g. the 8 mosaics of ``onevision preprocess
      --pack`` (``[8, 3, 576, 576]``), in the order of their ``video_token_id`` placeholders. Each gives
      ``T * (H/p/m) * (W/p/m)`` tokens.
    - ``video_positions_thw``: one ``[T * H/p * W/p, 3]`` (t, h, w) per video, in patch units, one row per patch of
      the mosaics in their raster order (``positions_thw.npy`` of ``preprocess --pack``); they become the encoder's
      rotary ``patch_positions``. ``None`` (or a ``None`` entry) places that video's frames at t = 0, 1, ...

    Lists rather than stacked tensors keep every image and video at its own size; for beam search and
    ``num_return_sequences > 1`` each row's images and videos are repeated with the row.

    ``labels [B, L]`` gives the language-model loss; positions holding a placeholder are masked (-100) here,
    whatever ``labels`` holds there; the prompt, padding and anything else not to be learnt must be -100 from
    the caller. Every other keyword (``past_key_values``/``cache``, ``position_ids``, ``use_cache``, ...) goes to
    the language model, whose output is returned.
    """

    config_class = OneVisionLlavaConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    # Each sub-model names its own blocks; transformers gathers them from every nested PreTrainedModel.
    _no_split_modules: list[str] = []
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = False

    def __init__(self, config: OneVisionLlavaConfig) -> None:
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = OneVisionLlavaProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        # One config object per part, shared with the sub-model: what changes there (resized embeddings) is saved.
        config.vision_config = self.vision_tower.config
        config.text_config = self.language_model.config
        self._check_token_ids()
        self.post_init()

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # The attention runs inside the two sub-models, each reading its backend from its own config at every call.
        return True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.text_config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check_token_ids(self) -> None:
        vocabulary = self.get_input_embeddings().num_embeddings
        for name in ("image_token_id", "video_token_id"):
            value = getattr(self.config, name)
            if value is not None and not 0 <= value < vocabulary:
                raise ValueError(
                    f"{name} {value} is outside the language model's {vocabulary} embeddings; add the token to the "
                    "tokenizer and call language_model.resize_token_embeddings(len(tokenizer)) first"
                )

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    @classmethod
    def from_encoder_and_lm(
        cls,
        encoder: str | os.PathLike[str] | OneVisionEncoderModel,
        language_model: str | os.PathLike[str] | PreTrainedModel,
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        dtype: torch.dtype | None = None,
        **config_kwargs: Any,
    ) -> OneVisionLlavaForConditionalGeneration:
        """A new LMM from a trained encoder and a trained causal LM (folders, hub ids or loaded models).

        The encoder and language model keep their weights; the projector is new (random). ``dtype`` loads both
        in it (models given are cast) and makes the projector of it. ``config_kwargs`` are further
        :class:`OneVisionLlavaConfig` fields (``vision_feature_layer``, ``spatial_merge``, ``projector_hidden_size``).
        """
        load = {} if dtype is None else {"dtype": dtype}
        if not isinstance(encoder, OneVisionEncoderModel):
            encoder = OneVisionEncoderModel.from_pretrained(encoder, **load)
        if not isinstance(language_model, PreTrainedModel):
            language_model = AutoModelForCausalLM.from_pretrained(language_model, **load)
        if dtype is not None:
            encoder, language_model = encoder.to(dtype), language_model.to(dtype)
        # The new config and model set the default attention backend on the parts' configs (they are shared):
        # the backends the parts were loaded with come back afterwards.
        backends = [(part, part.config._attn_implementation) for part in (encoder, language_model)]
        config = OneVisionLlavaConfig(
            vision_config=encoder.config,
            text_config=language_model.config,
            image_token_id=image_token_id,
            video_token_id=video_token_id,
            **config_kwargs,
        )
        # Built on the meta device, so the random encoder and LM it would make cost neither memory nor time.
        with torch.device("meta"):
            model = cls(config)
        for part, backend in backends:
            part.set_attn_implementation(backend)
        model.vision_tower = encoder
        model.language_model = language_model
        model.config.vision_config, model.config.text_config = encoder.config, language_model.config
        model.multi_modal_projector = OneVisionLlavaProjector(config).to(
            device=language_model.device, dtype=dtype or language_model.dtype
        )
        model.multi_modal_projector.apply(model._init_weights)
        model._check_token_ids()
        if getattr(language_model, "generation_config", None) is not None:
            # The LM's own generation settings (its end-of-turn tokens) rather than those derived from its config.
            model.generation_config = copy.deepcopy(language_model.generation_config)
        return model

    def unused_vision_modules(self) -> list[nn.Module]:
        """The tower's parts after ``vision_feature_layer`` (its later blocks, final norm and pooling head): their
        output never reaches the language model, so they get no gradient and are best frozen when the tower
        trains (DDP expects a gradient for every trainable parameter)."""
        tower = self.vision_tower
        states = len(tower.encoder.layers) + 1  # the blocks' input, then each block's output
        unused: list[nn.Module] = list(tower.encoder.layers[self.config.vision_feature_layer % states :])
        unused += [module for name in ("layernorm_post", "head") if (module := getattr(tower, name, None)) is not None]
        return unused

    def get_vision_features(
        self,
        pixel_values: list[torch.Tensor] | None = None,
        pixel_values_videos: list[torch.Tensor] | None = None,
        video_positions_thw: list[torch.Tensor | None] | None = None,
    ) -> tuple[list[TowerFeatures], list[TowerFeatures]]:
        """Projected tokens of each image and each video, with every merged token's (t, h, w).

        All images and videos go through the encoder as one packed forward. Returns ``(images, videos)``, one
        :class:`TowerFeatures` each: ``features [N_i, text hidden]`` and ``positions_thw [N_i, 3]`` (merged units).
        """
        images = _as_list(pixel_values, "pixel_values", 3, "[C, H, W]")
        videos = _as_list(pixel_values_videos, "pixel_values_videos", 4, "[T, C, H, W]")
        positions = [None] * len(videos) if video_positions_thw is None else list(video_positions_thw)
        if len(positions) != len(videos):
            raise ValueError(
                f"video_positions_thw has {len(positions)} entries for {len(videos)} videos in pixel_values_videos"
            )
        if not images and not videos:
            return [], []
        dtype = self.vision_tower.dtype
        samples = [{"pixel_values": image.to(dtype)} for image in images]
        samples += [
            {"pixel_values": video.to(dtype).transpose(0, 1), "patch_positions": where}
            for video, where in zip(videos, positions, strict=True)
        ]
        try:
            tower = vision_tower_features(
                self.vision_tower,
                samples,
                layer=self.config.vision_feature_layer,
                spatial_merge=self.config.spatial_merge,
            )
        except ValueError as error:
            # The tower numbers the packed samples (images, then videos); name the caller's argument instead.
            names = [f"pixel_values[{n}]" for n in range(len(images))]
            names += [f"pixel_values_videos[{n}] (with video_positions_thw[{n}])" for n in range(len(videos))]
            message = re.sub(r"^sample (\d+)", lambda match: names[int(match[1])], str(error))
            raise ValueError(message) from None
        weight = self.multi_modal_projector.linear_1.weight
        projected = self.multi_modal_projector(torch.cat([part.features for part in tower]).to(weight.dtype))
        features = projected.split([part.features.shape[0] for part in tower])
        results = [TowerFeatures(f, part.positions_thw) for f, part in zip(features, tower, strict=True)]
        return results[: len(images)], results[len(images) :]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        pixel_values_videos: list[torch.Tensor] | None = None,
        video_positions_thw: list[torch.Tensor | None] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> ModelOutput | tuple[torch.Tensor, ...]:
        """The language model's output (``CausalLMOutputWithPast``: ``loss`` with ``labels``, ``logits``, the cache)."""
        has_vision = pixel_values is not None or pixel_values_videos is not None
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if has_vision and input_ids is None:
            raise ValueError("vision inputs need input_ids: their placeholder tokens say where the vision tokens go")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if has_vision:
            images, videos = self.get_vision_features(pixel_values, pixel_values_videos, video_positions_thw)
            for kind, parts in (("image", images), ("video", videos)):
                inputs_embeds = self._place(inputs_embeds, input_ids, kind, parts)
        if labels is not None and input_ids is not None:
            placeholders = self._placeholder_mask(input_ids)
            labels = labels.masked_fill(placeholders.to(labels.device), -100)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _placeholder_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for token in (self.config.image_token_id, self.config.video_token_id):
            if token is not None:
                mask |= input_ids == token
        return mask

    def _place(
        self, inputs_embeds: torch.Tensor, input_ids: torch.Tensor, kind: str, parts: list[TowerFeatures]
    ) -> torch.Tensor:
        """``inputs_embeds`` with the ``kind`` placeholders replaced, in order, by the parts' tokens."""
        token = getattr(self.config, f"{kind}_token_id")
        tokens = sum(part.features.shape[0] for part in parts)
        if token is None:
            if parts:
                raise ValueError(f"{kind} inputs were given but config.{kind}_token_id is not set")
            return inputs_embeds
        mask = input_ids == token
        placeholders = int(mask.sum())
        if placeholders != tokens:
            raise ValueError(
                f"input_ids hold {placeholders} {kind} placeholder tokens ({kind}_token_id={token}) but the "
                f"{len(parts)} {kind}(s) given make {tokens} {kind} tokens; each {kind} needs exactly as many "
                "placeholders as the tower makes tokens for it"
            )
        if not tokens:
            return inputs_embeds
        features = torch.cat([part.features for part in parts]).to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).to(inputs_embeds.device), features)

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[torch.LongTensor, dict[str, Any]]:
        """Beam search and ``num_return_sequences`` repeat each row of ``input_ids``; the vision lists, which have no
        batch dimension, repeat each row's images and videos alike (transformers repeats only tensors)."""
        if expand_size > 1 and input_ids is not None:
            kinds = (("image", "pixel_values", ()), ("video", "pixel_values_videos", ("video_positions_thw",)))
            for kind, key, companions in kinds:
                token = getattr(self.config, f"{kind}_token_id")
                if model_kwargs.get(key) is None or token is None:
                    continue
                rows = self._items_per_row(list(model_kwargs[key]), (input_ids == token).sum(dim=1).tolist())
                if rows is None:
                    continue  # counts that do not match: forward() names them
                order = [item for row in rows for _ in range(expand_size) for item in row]
                for name in (key, *companions):
                    if model_kwargs.get(name) is not None:
                        model_kwargs[name] = [list(model_kwargs[name])[item] for item in order]
        return super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )

    def _items_per_row(self, items: list[torch.Tensor], placeholders: list[int]) -> list[list[int]] | None:
        """Which of ``items`` (in placeholder order) each row holds, from its placeholder count; ``None`` when the
        counts do not add up."""
        patch, merge = self.config.vision_config.patch_size, self.config.spatial_merge
        rows: list[list[int]] = []
        item = 0
        for count in placeholders:
            row: list[int] = []
            while count > 0 and item < len(items):
                count -= vision_token_count(tuple(items[item].shape), patch, merge)
                row.append(item)
                item += 1
            if count != 0:
                return None
            rows.append(row)
        return rows if item == len(items) else None

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs: Any) -> dict[str, Any]:
        vision = {key: kwargs.pop(key, None) for key in VISION_INPUTS}
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # Vision goes in with the whole prompt only (the first step, or every step without a cache): later steps
        # feed just the new tokens, whose keys and values for the vision tokens are already cached.
        fed = model_inputs.get("input_ids")
        if fed is not None and fed.shape[1] == input_ids.shape[1]:
            model_inputs.update(vision)
        return model_inputs


def _as_list(values: Any, name: str, rank: int, layout: str) -> list[torch.Tensor]:
    if values is None:
        return []
    if isinstance(values, torch.Tensor):
        raise TypeError(
            f"{name} must be a list of {layout} tensors (one per placeholder group, each at its own size), got one "
            f"tensor of shape {tuple(values.shape)}: pass list({name}) for a stack"
        )
    values = list(values)
    for number, value in enumerate(values):
        if not isinstance(value, torch.Tensor) or value.ndim != rank:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name}[{number}] must be a {layout} tensor, got {shape}")
    return values
