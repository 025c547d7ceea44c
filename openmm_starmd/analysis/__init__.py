"""Validation metrics for generated protein trajectories against reference MD.

Every metric takes mdtraj.Trajectory objects and returns plain numbers or NumPy arrays.
Modules: :mod:`.matching` (load, match atom sets, align), :mod:`.divergences` (JSD, recall, W2),
:mod:`.ensemble`, :mod:`.dynamics`, :mod:`.validity`, :mod:`.energy`, :mod:`.compare` (floor and windows),
:mod:`.plots`, :mod:`.report` (``starmd validate``). The names below are the public API; they are
imported on first use, so ``from openmm_starmd.analysis import validity`` (the hybrid simulator's
guard) does not pull in deeptime or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "jensen_shannon": "divergences", "recall": "divergences", "wasserstein2": "divergences",
    "compare_dynamics": "dynamics", "dynamics_metrics": "dynamics", "fit_dynamics_reference": "dynamics",
    "ca_rmsf": "ensemble", "compare_ensemble": "ensemble", "ensemble_metrics": "ensemble",
    "fit_ensemble_reference": "ensemble", "pairwise_rmsd": "ensemble",
    "load_trajectory": "matching", "match_atoms": "matching", "matched_pair": "matching",
    "CA_BOND_BREAK_NM": "validity", "CA_CLASH_NM": "validity", "HEAVY_CLASH_NM": "validity",
    "FrameValidity": "validity", "frame_validity": "validity", "validity_rates": "validity",
    "compare_ensembles": "compare", "validate": "report",
    "potential_energies": "energy", "trajectory_energies": "energy", "compare_energies": "energy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
