"""Hybrid simulation: learned jumps (STAR-MD or any registered proposer) relaxed by OpenMM.

Typical use::

    sim = StarMDSimulation(topology, system, "default", jump=1 * unit.nanosecond, device="auto")
    sim.context.setPositions(positions)
    sim.reporters.append(app.XTCReporter("traj.xtc", 1))
    sim.step(1000)          # 1000 jumps = 1 µs
"""

from openmm_starmd.simulation.ensemble import StarMDEnsemble
from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import JumpIntegrator, JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.proposer import (
    PerturbationProposer,
    Proposer,
    ProposerFactory,
    StarMDProposer,
    StarMDProposerFactory,
    available_proposers,
    register_proposer,
    resolve_proposer,
)
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.reporters import JumpLogReporter
from openmm_starmd.simulation.stats import CycleStats

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
    "StarMDEnsemble",
    "StarMDProposer",
    "StarMDProposerFactory",
    "StarMDSimulation",
    "available_proposers",
    "register_proposer",
    "resolve_proposer",
]
