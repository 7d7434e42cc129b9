"""Frozen image models from transformers: the concept teacher and the probe's ``baseline`` encoder.

Any transformers vision model loads, from a local folder or a hub id: a ``...VisionModelWithProjection``
checkpoint keeps its projection, OneVision Encoder folders work with or without a preprocessor config,
and a model or processor that cannot be loaded is an error naming it. A model's image embedding is
``get_image_features`` (CLIP-like models), else ``image_embeds``, else ``pooler_output``, else the mean
of ``last_hidden_state``.
"""

from __future__ import annotations

import os
from typing import Any


def load_teacher(teacher: str | os.PathLike[str], device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """``(model, image_processor)`` of a transformers vision model (folder or hub id), in eval mode on
    ``device`` (``auto``: :func:`~onevision_encoder.common.distributed.resolve_device`), in ``dtype`` when given."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    from ..common.distributed import resolve_device
    from ..model import OneVisionEncoderImageProcessor, OneVisionEncoderModel  # registers with the Auto classes

    name = os.fspath(teacher)
    try:
        model_class = _projection_class(AutoConfig.from_pretrained(name)) or AutoModel
        model = model_class.from_pretrained(name, **({} if dtype is None else {"dtype": dtype}))
    except (OSError, ValueError) as error:
        raise ValueError(f"teacher {name}: cannot load a model ({error})") from None
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as error:
        if not isinstance(model, OneVisionEncoderModel):
            raise ValueError(f"teacher {name}: cannot load an image processor ({error})") from None
        processor = OneVisionEncoderImageProcessor()
    return model.to(resolve_device(device)).eval(), processor


def _projection_class(config: Any) -> Any:
    """A ``...VisionModelWithProjection`` checkpoint keeps its projection (AutoModel would drop it)."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        if name.endswith("WithProjection") and "Vision" in name:
            return getattr(transformers, name, None)
    return None


def image_features(model: Any, pixel_values: Any) -> Any:
    """``[B, D]`` float embeddings of a batch of preprocessed images (not yet normalised)."""
    if hasattr(model, "get_image_features"):
        output = model.get_image_features(pixel_values=pixel_values)
    else:
        output = model(pixel_values=pixel_values)
    if not hasattr(output, "keys"):  # a plain tensor (get_image_features in transformers < 5)
        return output.flatten(1)
    for key in ("image_embeds", "pooler_output"):
        value = output.get(key)
        if value is not None:
            return value.flatten(1)
    hidden = output.get("last_hidden_state")
    if hidden is None:
        raise ValueError(f"the teacher {type(model).__name__} gives no image embedding (outputs: {list(output)})")
    return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)  # tokens, or conv maps
