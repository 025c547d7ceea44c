"""OpenMM side of StarMDForce: lazy openmm-torch import, adding the force to a System, switching λ."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import openmm

from openmm_starmd.errors import StarMDError

__all__ = [
    "OPENMMTORCH_PACKAGE",
    "WEIGHT_PARAMETER",
    "add_starmd_force",
    "import_openmmtorch",
    "set_starmd_weight",
    "starmd_force_on",
]

WEIGHT_PARAMETER = "starmd_force_weight"
OPENMMTORCH_PACKAGE = "acellera-openmmtorch-cpu"


def import_openmmtorch() -> Any:
    """The ``openmmtorch`` module, or a :class:`StarMDError` naming the package to install."""
    try:
        import openmmtorch
    except ImportError:
        raise StarMDError(f"StarMDForce needs openmm-torch, which is not installed: pip install {OPENMMTORCH_PACKAGE} "
                          "(or conda install -c conda-forge openmm-torch)") from None
    return openmmtorch


def add_starmd_force(
    system: openmm.System, topology: Any, model: Any, context_positions: Any, path: str | os.PathLike,
    weight: float = 1.0, dt_ps: float | Any = 1000.0, temperature: float | Any = 300.0, tau: float | None = None,
    force_group: int | None = None,
) -> int:
    """Add a :class:`StarMDForce` (as an ``openmmtorch.TorchForce``) to ``system``.

    Parameters
    ----------
    system
        The System to extend (changed in place); its particle count must match ``topology``.
    topology, model, context_positions, dt_ps, temperature, tau
        As for :class:`StarMDForce`.
    path
        Where the TorchScript module is written (keep it with the serialised System).
    weight
        Initial λ (global parameter :data:`WEIGHT_PARAMETER`; 0 switches the force off).
    force_group
        Force group of the new force (default 0).

    Returns
    -------
    int
        Index of the new force in ``system``.
    """
    import_openmmtorch()  # fail before the (slow) model work when openmm-torch is missing
    n_atoms = topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms
    if system.getNumParticles() != n_atoms:
        raise StarMDError(f"the System has {system.getNumParticles()} particles but the topology {n_atoms} atoms: "
                          "give the topology the System was built from")
    from openmm_starmd.forces.module import StarMDForce

    module = StarMDForce(model, topology, context_positions, dt_ps=dt_ps, temperature=temperature, tau=tau)
    force = module.create_openmm_force(path, weight=weight)
    if force_group is not None:
        if not 0 <= int(force_group) <= 31:
            raise StarMDError(f"force_group must be in 0..31, got {force_group}")
        force.setForceGroup(int(force_group))
    return system.addForce(force)


def set_starmd_weight(context: openmm.Context, weight: float) -> None:
    """Set λ of the StarMDForce in a running ``context`` (forces scale proportionally)."""
    if WEIGHT_PARAMETER not in context.getParameters():
        raise StarMDError("this Context has no StarMDForce: add one with add_starmd_force before creating it")
    context.setParameter(WEIGHT_PARAMETER, float(weight))


@contextlib.contextmanager
def starmd_force_on(context: openmm.Context, weight: float) -> Iterator[None]:
    """λ = ``weight`` inside the block and 0 after it (also on error).

    A no-op when ``weight`` is 0 or the Context has no StarMDForce, so callers (e.g. the relaxation's
    MD segment) can wrap their steps unconditionally. Keep the force off (λ = 0) during energy
    minimisation: it reports no energy, so a line search cannot account for it.
    """
    active = float(weight) != 0.0 and WEIGHT_PARAMETER in context.getParameters()
    if active:
        context.setParameter(WEIGHT_PARAMETER, float(weight))
    try:
        yield
    finally:
        if active:
            context.setParameter(WEIGHT_PARAMETER, 0.0)
