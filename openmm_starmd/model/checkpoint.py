"""Model checkpoints: weights in safetensors plus a JSON file with the config and metadata.

Layout of a model folder::

    model.safetensors   weights used for inference (the EMA weights when trained by the Trainer)
    model.json          {"format", "version", "config": ModelConfig fields, "metadata": {...}}

:func:`load_model` reads only these two files: no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.config import ModelConfig
from openmm_starmd.model.network import StarMDNetwork

FORMAT = "openmm_starmd.model"
VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to a safetensors file atomically (contiguous CPU copies)."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_write(path, "wb") as handle:
        handle.write(save(data, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never unpickles)."""
    try:
        return load(Path(path).read_bytes())
    except FileNotFoundError:
        raise StarMDError(f"weights file {path} not found: give a model folder written by `starmd train`") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise StarMDError(f"cannot read weights {path} ({exc}): the file is damaged; retrain or re-copy it") from None


def save_model(
    folder: str | os.PathLike, model: StarMDNetwork, metadata: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` (created if needed).

    Parameters
    ----------
    state_dict
        Weights to save instead of ``model.state_dict()`` (e.g. EMA weights).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else model.state_dict()
    step = str((metadata or {}).get("step", ""))
    save_tensors(folder / WEIGHTS_NAME, weights, {"format": FORMAT, "step": step})
    atomic_write_json(folder / CONFIG_NAME, {"format": FORMAT, "version": VERSION,
                                             "config": model.config.to_dict(), "metadata": metadata or {}})
    return folder


def read_model_json(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise StarMDError(f"{path} not found: give a model folder written by `starmd train`") from None
    except json.JSONDecodeError as exc:
        raise StarMDError(f"{path} is not valid JSON ({exc}): the model folder is damaged") from None
    if info.get("format") != FORMAT or int(info.get("version", 0)) > VERSION:
        raise StarMDError(f"{path} is not an openmm_starmd model of a supported version: retrain or upgrade")
    return info


def load_model(path_or_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[StarMDNetwork, ModelConfig]:
    """Load a trained model for inference (eval mode).

    Parameters
    ----------
    path_or_dir
        A model folder, or its ``model.safetensors`` / ``model.json`` file.

    Returns
    -------
    model, config
    """
    path = Path(path_or_dir)
    folder = path if path.is_dir() else path.parent
    if not folder.exists():
        raise StarMDError(f"model {path} not found: give a folder written by `starmd train`")
    info = read_model_json(folder)
    config = ModelConfig.from_dict(info["config"])
    model = StarMDNetwork(config)
    weights = load_tensors(folder / WEIGHTS_NAME)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise StarMDError(f"weights in {folder} do not match the config (missing {list(missing)[:3]}, unexpected "
                          f"{list(unexpected)[:3]}): the folder mixes files of different models")
    return model.to(device).eval(), config
