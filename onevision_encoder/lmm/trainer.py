"""transformers' ``Trainer`` with a learning rate per part of the LMM (``train.vision_tower_lr``, ...).

The LLaVA-OneVision recipe trains the vision tower several times slower than the projector and the LM.
``Trainer`` builds one rate for every parameter; this subclass lets it build its optimiser as usual (its
weight-decay groups, its optimiser class from ``TrainingArguments.optim``), then splits each group by part.
The scheduler scales every group alike, so each part keeps its ratio to the others over the whole run.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from .modeling import PART_MODULES

# Name segments that FSDP (v1) and activation checkpointing insert when they wrap a module.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod", "module")


def part_of(name: str) -> str | None:
    """The LMM part (``vision_tower``, ``projector``, ``language_model``) a parameter name belongs to."""
    segments = [segment for segment in name.split(".") if segment not in _WRAPPER_SEGMENTS]
    module = segments[0] if segments else ""
    return next((part for part, attribute in PART_MODULES.items() if attribute == module), None)


class PartRateTrainer(Trainer):
    """A ``Trainer`` whose optimiser gives the parts in ``part_rates`` their own learning rate."""

    def __init__(self, *args: Any, part_rates: dict[str, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.part_rates = part_rates

    def create_optimizer(self, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        had_optimizer = self.optimizer is not None
        optimizer = super().create_optimizer(*args, **kwargs)
        if had_optimizer or not self.part_rates:
            return optimizer
        models = [*args, kwargs.get("model"), self.model, self.model_wrapped]
        names = {id(p): name for model in models if model is not None for name, p in model.named_parameters()}
        groups, found = [], set()
        for group in optimizer.param_groups:
            by_rate: dict[float, list[torch.nn.Parameter]] = {}
            for parameter in group["params"]:
                if id(parameter) not in names:
                    raise RuntimeError(
                        f"train.*_lr: the optimiser ({type(optimizer).__name__}) holds a parameter that the model "
                        "does not name; per-part learning rates need an optimiser over the model's own parameters"
                    )
                part = part_of(names[id(parameter)])
                found.add(part)
                by_rate.setdefault(self.part_rates.get(part, group["lr"]), []).append(parameter)
            groups += [{**group, "params": params, "lr": rate} for rate, params in by_rate.items()]
        missing = sorted(set(self.part_rates) - found)
        if missing:
            raise RuntimeError(f"train.*_lr: the optimiser holds no parameter of {missing} (frozen or absent)")
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer
