"""Random draws for one generator or one generator per batch element.

A batch of independent replicas draws its noise from one :class:`torch.Generator` per replica: element
b of the batch (the leading dimension) is drawn from ``generators[b]`` with the shape a single-replica
run would use (``[1, *rest]``), so replica b reproduces a run of its own with the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from openmm_starmd.frames.igso3 import IGSO3

Generators = torch.Generator | Sequence[torch.Generator]


def _split(generator: Generators | None, batch: int) -> list[torch.Generator] | None:
    """The per-element generators, or None for a single generator (or none)."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}: give one per replica")
    return gens


def randn(
    shape: tuple[int, ...], generator: Generators | None, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Standard normal ``[*shape]``; with a list of generators, row b of dimension 0 comes from ``generator[b]``."""
    gens = _split(generator, shape[0] if shape else 0)
    if gens is None:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    rest = tuple(shape[1:])
    return torch.cat([torch.randn((1, *rest), generator=g, dtype=dtype, device=device) for g in gens])


def igso3_sample(igso3: IGSO3, sigma: torch.Tensor, generator: Generators | None) -> torch.Tensor:
    """Rotation vectors ``[..., 3]`` from IGSO(3)(``sigma`` ``[...]``); per-element generators as in :func:`randn`."""
    gens = _split(generator, sigma.shape[0] if sigma.dim() else 0)
    if gens is None:
        return igso3.sample(sigma, generator)
    return torch.cat([igso3.sample(sigma[b:b + 1], g) for b, g in enumerate(gens)])
