"""Encoder pre-training: data, batch composition, the cluster-discrimination loss and the trainer. May import
``evaluation``, ``jobs``, ``model``, ``codec``, ``video`` and ``common``."""

from .config import TrainConfig, load_config
from .data import ManifestError, read_manifest
from .loss import ClusterDiscriminationLoss
from .trainer import train

__all__ = ["ClusterDiscriminationLoss", "ManifestError", "TrainConfig", "load_config", "read_manifest", "train"]
