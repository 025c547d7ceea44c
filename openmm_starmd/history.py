"""One replica's rollout history (key/value cache, last frame, alignment) and its CPU-tensor state."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.rigid import identity_rotations
from openmm_starmd.model.network import KVCache

_LAST = ("last_rot", "last_trans", "last_noisy_rot", "last_noisy_trans")


@dataclass
class History:
    """One replica's state: key/value cache, frames pushed, last frame (caller's clean frame moved to world
    coordinates, and its context-noised copy, ``[N, 3, 3]``/``[N, 3]`` nm each) and the rigid transform from
    the caller's coordinates of the last pushed frame to world coordinates."""

    cache: KVCache
    align: tuple[torch.Tensor, torch.Tensor]
    count: int = 0
    last: tuple[torch.Tensor, ...] | None = None


def empty_history(device: torch.device) -> History:
    """No frames yet; the alignment is the identity (``[3, 3]``, ``[3]`` nm): before a second frame is pushed,
    world coordinates are the caller's."""
    return History(KVCache(), (identity_rotations((), device=device), torch.zeros(3, device=device)))


def fork(h: History) -> History:
    """A copy of ``h`` that later pushes leave ``h`` unchanged (the cache's tensors are replaced, not written)."""
    return replace(h, cache=KVCache(list(h.cache.layers), h.cache.frame_index))


def history_state(h: History) -> dict[str, torch.Tensor]:
    """``h`` as a flat dict of CPU tensors (safetensors-friendly)."""
    state = {"count": torch.tensor(h.count, device="cpu")}
    if h.last is not None:
        for name, value in zip(_LAST, h.last, strict=True):
            state[name] = value.detach().to("cpu", copy=True)
        state["frame_index"] = h.cache.frame_index.to("cpu", copy=True)
        state["align_rot"], state["align_trans"] = (x.detach().to("cpu", copy=True) for x in h.align)
        for i, (k, v) in enumerate(h.cache.layers):
            state[f"cache_k_{i}"] = k.to("cpu", copy=True)
            state[f"cache_v_{i}"] = v.to("cpu", copy=True)
    return state


def load_history(state: dict[str, torch.Tensor], num_residues: int, num_blocks: int, device: torch.device) -> History:
    """The :class:`History` a :func:`history_state` describes, on ``device``, for N = ``num_residues`` residues
    and a network of ``num_blocks`` blocks."""
    h = empty_history(device)
    h.count = int(state["count"])
    if "last_rot" in state:
        if state["last_rot"].shape[0] != num_residues:
            raise StarMDError("rollout state is for a different number of residues: use the matching model/system")
        h.last = tuple(state[n].to(device) for n in _LAST)
        layers = [(state[f"cache_k_{i}"].to(device), state[f"cache_v_{i}"].to(device)) for i in range(num_blocks)]
        h.cache = KVCache(layers, state["frame_index"].to(device))
        if "align_rot" in state:
            h.align = (state["align_rot"].to(device), state["align_trans"].to(device))
    return h
