"""One binary blob for a hybrid checkpoint: OpenMM checkpoint + proposer history + RNG state.

The blob is a safetensors file (tensors plus a JSON string in its metadata), so loading a user's
checkpoint never unpickles anything. The OpenMM checkpoint bytes travel as a uint8 tensor.
"""

from __future__ import annotations

import json
from typing import Any

import safetensors.torch
import torch

from openmm_starmd.errors import StarMDError

FORMAT = "openmm_starmd.hybrid/1"
_META_KEY = "starmd"


def split_state(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate the tensors of a state dict (keys prefixed) from its JSON-able values."""
    tensors, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + key] = value.detach().cpu().contiguous().clone()
        else:
            plain[key] = value
    return tensors, plain


def join_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Inverse of :func:`split_state`."""
    state = dict(plain)
    state.update({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)})
    return state


def pack(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Serialise tensors and JSON-able metadata into one safetensors blob."""
    return safetensors.torch.save(tensors, metadata={_META_KEY: json.dumps({"format": FORMAT, **meta})})


def unpack(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a blob written by :func:`pack`.

    Raises
    ------
    StarMDError
        If the blob is not a hybrid checkpoint (e.g. a plain OpenMM checkpoint).
    """
    try:
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + header_len])
        meta = json.loads(header["__metadata__"][_META_KEY])
        tensors = safetensors.torch.load(blob)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise StarMDError(f"not a StarMDSimulation checkpoint ({type(exc).__name__}): give a file written by "
                          "StarMDSimulation.saveCheckpoint") from None
    if meta.get("format") != FORMAT:
        raise StarMDError(f"checkpoint format {meta.get('format')!r} is not {FORMAT!r}: it was written by "
                          "another version of openmm_starmd")
    return tensors, meta
