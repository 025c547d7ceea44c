"""openmm_starmd: STAR-MD learned long-time-step protein dynamics as an OpenMM component.

The public API lives here::

    from openmm_starmd import StarMDSimulation, StarMDForce, load_model, RelaxSettings, GuardSettings

Each name is imported on first use (module ``__getattr__``), so ``import openmm_starmd`` stays cheap
(no torch, no OpenMM) and works even when optional pieces are missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from openmm_starmd.errors import StarMDError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "StarMDSimulation": "openmm_starmd.simulation.hybrid",
    "StarMDEnsemble": "openmm_starmd.simulation.ensemble",
    "StarMDForce": "openmm_starmd.forces",
    "load_model": "openmm_starmd.model.checkpoint",
    "resolve_proposer": "openmm_starmd.simulation.proposer",
    "RelaxSettings": "openmm_starmd.simulation.relax",
    "GuardSettings": "openmm_starmd.simulation.guards",
}

if TYPE_CHECKING:
    from openmm_starmd.forces import StarMDForce
    from openmm_starmd.model.checkpoint import load_model
    from openmm_starmd.simulation.ensemble import StarMDEnsemble
    from openmm_starmd.simulation.guards import GuardSettings
    from openmm_starmd.simulation.hybrid import StarMDSimulation
    from openmm_starmd.simulation.proposer import resolve_proposer
    from openmm_starmd.simulation.relax import RelaxSettings

__all__ = ["GuardSettings", "RelaxSettings", "StarMDEnsemble", "StarMDError", "StarMDForce", "StarMDSimulation",
           "__version__", "load_model", "resolve_proposer"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openmm_starmd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
