"""The STAR-MD network: configuration presets (:mod:`.config`), embeddings, attention layers, the
network (:mod:`.network`), token preparation (:mod:`.tokens`) and checkpoints (:mod:`.checkpoint`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from openmm_starmd.model.config import PRESETS, ModelConfig, preset

if TYPE_CHECKING:
    from openmm_starmd.model.network import StarMDNetwork

__all__ = ["PRESETS", "ModelConfig", "load_model", "preset"]


def load_model(path_or_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[StarMDNetwork, ModelConfig]:
    """See :func:`openmm_starmd.model.checkpoint.load_model` (imported lazily)."""
    from openmm_starmd.model.checkpoint import load_model as _load

    return _load(path_or_dir, device)
