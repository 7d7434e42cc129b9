"""Evaluation: attentive probes on frozen features, comparing encoders at equal token budgets. May import
``jobs``, ``model``, ``codec``, ``video`` and ``common``."""

from ..jobs.feature_store import FeatureStore
from .augment import ColorJitter
from .datasets import Clip, ListError, label_index, read_list
from .extract import FeatureExtractor, FeatureSpec, cached_features
from .probe import AttentiveProbe, ProbeResult, ProbeSettings, train_probe

__all__ = [
    "AttentiveProbe",
    "Clip",
    "ColorJitter",
    "FeatureExtractor",
    "FeatureSpec",
    "FeatureStore",
    "ListError",
    "ProbeResult",
    "ProbeSettings",
    "cached_features",
    "label_index",
    "read_list",
    "train_probe",
]
