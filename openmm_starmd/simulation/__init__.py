"""Hybrid simulation: learned jumps (STAR-MD or any registered proposer) relaxed by OpenMM.

Typical use::

    sim = StarMDSimulation(topology, system, "path/to/model", jump=1 * unit.nanosecond)
    sim.context.setPositions(positions)
    sim.reporters.append(app.XTCReporter("traj.xtc", 1))
    sim.step(1000)          # 1000 jumps = 1 µs
"""

from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import CycleStats, JumpIntegrator, JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.proposer import (
    PerturbationProposer,
    Proposer,
    ProposerFactory,
    StarMDProposer,
    StarMDProposerFactory,
    available_proposers,
    create_proposer,
    register_proposer,
)
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.reporters import JumpLogReporter

__all__ = [
    "CycleStats",
    "GuardSettings",
    "JumpIntegrator",
    "JumpLogReporter",
    "JumpRejectedError",
    "PerturbationProposer",
    "Proposer",
    "ProposerFactory",
    "RelaxSettings",
    "StarMDProposer",
    "StarMDProposerFactory",
    "StarMDSimulation",
    "available_proposers",
    "create_proposer",
    "register_proposer",
]
