"""YAML config files mapped onto settings dataclasses, unknown keys being errors (training's and lmm-train's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml


def settings_from(cls: type, values: Any, where: str) -> Any:
    """A settings dataclass from a config section's mapping; an unknown key is a ``ValueError`` naming it."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = dict(values)
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return cls(**values)


def read_mapping(path: Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping (an empty file is an empty one)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the config must be a mapping")
    return raw
