"""One binary blob for a hybrid checkpoint: OpenMM checkpoint + proposer history + RNG state.

The blob is a safetensors file (tensors plus a JSON string in its metadata), so loading a user's
checkpoint never unpickles anything. The OpenMM checkpoint bytes travel as a uint8 tensor.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.simulation.solvent import MergeReport
from openmm_starmd.simulation.stats import CycleStats

if TYPE_CHECKING:
    from openmm_starmd.simulation.hybrid import StarMDSimulation

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


def read_bytes(file: str | os.PathLike | Any) -> bytes:
    """The bytes of a checkpoint path or binary file object, with a one-line error for a missing path."""
    if isinstance(file, (str, os.PathLike)):
        if not os.path.exists(file):
            raise StarMDError(f"checkpoint {file} not found: check the path")
        with open(file, "rb") as handle:
            return handle.read()
    return file.read()


def simulation_parts(sim: StarMDSimulation, proposer: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON-able metadata of a :class:`StarMDSimulation`'s exact state (``proposer=False``
    leaves out the proposer's history, which an ensemble saves once for all replicas)."""
    tensors = {
        "openmm": torch.frombuffer(bytearray(sim.context.createCheckpoint()), dtype=torch.uint8),
        "rng": sim.generator.get_state(),
    }
    proposer_plain: dict[str, Any] = {}
    if sim.started:
        if proposer:
            proposer_tensors, proposer_plain = split_state(sim.proposer.state_dict(), "proposer.")
            tensors.update(proposer_tensors)
        tensors["chirality"] = torch.as_tensor(sim.guard.reference_chirality, device="cpu")
    meta = {"jump_ps": sim.jump_ps, "started": sim.started, "proposer": proposer_plain, **sim.totals.to_dict(),
            "solvent": {"overlapping": sim.solvent_stats.overlapping, "moved": sim.solvent_stats.moved}}
    return tensors, meta


def restore_simulation(sim: StarMDSimulation, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                       proposer: bool = True) -> None:
    """Inverse of :func:`simulation_parts`; the simulation then continues exactly."""
    if abs(meta["jump_ps"] - sim.jump_ps) > 1e-9 * sim.jump_ps:
        raise StarMDError(f"checkpoint was written with a {meta['jump_ps']:g} ps jump, this simulation "
                          f"jumps {sim.jump_ps:g} ps: use the same jump to resume")
    sim.context.loadCheckpoint(tensors["openmm"].numpy().tobytes())
    sim.generator.set_state(tensors["rng"].cpu())
    sim.started = bool(meta["started"])
    if sim.started:
        if proposer:
            sim.proposer.load_state_dict(join_state(tensors, meta["proposer"], "proposer."))
        sim.guard.reference_chirality = tensors["chirality"].numpy()
    elif proposer:
        sim.proposer.reset()
    sim.totals = CycleStats.from_dict(meta)
    sim.solvent_stats = MergeReport(**meta.get("solvent", {}))
