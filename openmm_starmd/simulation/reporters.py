"""Reporters specific to hybrid runs (OpenMM's own reporters work unchanged on a StarMDSimulation).

:class:`JumpLogReporter` writes one CSV row per report: simulated time, potential energy, CA RMSD to
the starting structure, the rejections and halvings of the cycle, its wall time, and its raw proposals
with how many of them were valid before guards and relaxation.
"""

from __future__ import annotations

import os
from typing import Any

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u

LOG_COLUMNS = ("time_ps", "potential_energy_kj_per_mol", "rmsd_ca_nm", "rejections", "halvings",
               "wall_s", "model_s", "openmm_s", "proposals", "raw_valid")


class JumpLogReporter:
    """CSV log of a hybrid run (implements OpenMM's reporter protocol).

    Parameters
    ----------
    file
        Output path; with ``append`` rows are added to an existing log (no second header).
    reportInterval
        Cycles between rows.
    reference_positions
        ``[n_atoms, 3]`` nm structure that RMSD is measured against (after optimal superposition of
        the CA atoms).
    topology
        The simulated topology.
    append
        Continue an existing file.
    """

    def __init__(self, file: str | os.PathLike, reportInterval: int, reference_positions: np.ndarray,
                 topology: app.Topology, append: bool = False) -> None:
        self._interval = int(reportInterval)
        self._md_topology = md.Topology.from_openmm(topology)
        self._ca = self._md_topology.select("name CA")
        self._reference = md.Trajectory(np.asarray(reference_positions, dtype=np.float32)[None],
                                        self._md_topology)
        self._out = open(file, "a" if append else "w", encoding="utf-8")  # closed in close()
        if not append:
            self._out.write(",".join(LOG_COLUMNS) + "\n")
            self._out.flush()

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions", "energy"]}

    def report(self, simulation: app.Simulation, state: Any) -> None:
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        frame = md.Trajectory(np.asarray(positions, dtype=np.float32)[None], self._md_topology)
        rmsd = float(md.rmsd(frame, self._reference, atom_indices=self._ca)[0]) if len(self._ca) else 0.0
        stats = getattr(simulation, "last_cycle", None)
        row = [
            f"{state.getTime().value_in_unit(u.picosecond):.6f}",
            f"{state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole):.4f}",
            f"{rmsd:.5f}",
            str(stats.num_rejections if stats else 0),
            str(stats.halvings if stats else 0),
            f"{stats.wall_s if stats else 0.0:.4f}",
            f"{stats.model_s if stats else 0.0:.4f}",
            f"{stats.openmm_s if stats else 0.0:.4f}",
            str(stats.proposals if stats else 0),
            str(stats.raw_valid if stats else 0),
        ]
        self._out.write(",".join(row) + "\n")
        self._out.flush()

    def close(self) -> None:
        """Close the file."""
        self._out.close()

    def __del__(self) -> None:
        if hasattr(self, "_out"):
            self._out.close()
