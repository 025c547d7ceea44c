"""Model checkpoints: weights in safetensors plus a JSON file with the config and metadata.

Layout of a model folder::

    model.safetensors   weights used for inference (the EMA weights when trained by the Trainer)
    model.json          {"format", "version", "config": ModelConfig fields, "metadata": {...}}

:func:`load_model` reads only these two files: no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
from importlib import resources
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
# ``--model default`` / ``load_model("default")``: the model shipped inside the package (openmm_starmd/weights/).
DEFAULT_MODEL = "default"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A torch device from ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:k``.

    Raises
    ------
    StarMDError
        If the name is not a device, or names a CUDA device that is not there.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise StarMDError(f"unknown device {device!r}: give auto, cpu, cuda or cuda:K") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise StarMDError(f"device {device!r} is not supported: give auto, cpu, cuda or cuda:K")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise StarMDError(f"device {device!r} asked for, but no CUDA GPU is available here: use --device cpu "
                          "(or auto)")
    index = 0 if resolved.index is None else resolved.index
    if index >= count:
        raise StarMDError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                          f"cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def default_model_path() -> Path:
    """Folder of the default model shipped as package data (``openmm_starmd/weights/``); no network needed.

    Raises
    ------
    StarMDError
        If the weights are not installed (e.g. a source tree without them).
    """
    folder = Path(str(resources.files("openmm_starmd") / "weights"))
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise StarMDError(f"the default STAR-MD model is not installed ({folder} lacks {WEIGHTS_NAME} or "
                          f"{CONFIG_NAME}): reinstall openmm_starmd or pass --model PATH (a checkpoint folder)")
    return folder


def model_folder(path_or_dir: str | os.PathLike) -> Path:
    """The checkpoint folder meant by ``path_or_dir`` (``"default"``, a folder, or one of its two files).

    Raises
    ------
    StarMDError
        If it does not exist or is not a checkpoint folder (it must hold model.json and model.safetensors).
    """
    if str(path_or_dir) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(path_or_dir)
    if not path.exists():
        raise StarMDError(f"model {path} not found: give a STAR-MD checkpoint folder (model.json + "
                          f"{WEIGHTS_NAME}, written by `starmd train`) or 'default'")
    if path.is_file() and path.name not in (WEIGHTS_NAME, CONFIG_NAME):
        raise StarMDError(f"model {path} is a file, not a STAR-MD checkpoint folder: give the folder holding "
                          f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by `starmd train`), or 'default'")
    folder = path if path.is_dir() else path.parent
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise StarMDError(f"model folder {folder} lacks {' and '.join(missing)}: give a STAR-MD checkpoint "
                          "folder written by `starmd train`, or 'default'")
    return folder


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` to a safetensors file atomically (contiguous CPU copies)."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_write(path, "wb") as handle:
        handle.write(save(data, metadata=metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (never unpickles), its tensors placed on ``device``."""
    try:
        tensors = load(Path(path).read_bytes())
        return {key: value.to(device) for key, value in tensors.items()}
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


def load_model(path_or_dir: str | os.PathLike = DEFAULT_MODEL,
               device: str | torch.device | None = "cpu") -> tuple[StarMDNetwork, ModelConfig]:
    """Load a trained model for inference (eval mode).

    Parameters
    ----------
    path_or_dir
        A model folder, or its ``model.safetensors`` / ``model.json`` file; ``"default"`` (the default) is
        the model shipped with the package.
    device
        Where the weights go (read straight onto it, whatever device wrote them): ``cpu``, ``cuda``,
        ``cuda:k`` or ``auto``/``None`` (CUDA when available).

    Returns
    -------
    model, config
    """
    folder = model_folder(path_or_dir)
    device = resolve_device(device)
    info = read_model_json(folder)
    config = ModelConfig.from_dict(info["config"])
    with torch.device(device):
        model = StarMDNetwork(config)
    weights = load_tensors(folder / WEIGHTS_NAME, device)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise StarMDError(f"weights in {folder} do not match the config (missing {list(missing)[:3]}, unexpected "
                          f"{list(unexpected)[:3]}): the folder mixes files of different models")
    return model.to(device).eval(), config
