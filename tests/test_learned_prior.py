"""The learned prior in the relaxation: a StarMDForce that is on only during the relaxation MD."""

from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system
from openmm_starmd.forces import WEIGHT_PARAMETER
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.simulation.hybrid import StarMDSimulation
from openmm_starmd.simulation.proposer import StarMDProposer
from openmm_starmd.simulation.relax import RelaxSettings, relax

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    torch.manual_seed(0)
    return topology, system, positions, StarMDNetwork(preset("tiny"))


def _relaxed(chignolin, weight: float) -> tuple[np.ndarray, float]:
    topology, system, positions, model = chignolin
    settings = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2, starmd_force_weight=weight)
    sim = StarMDSimulation(topology, system, StarMDProposer(model, topology), relax=settings, platform="Reference",
                           seed=0, prior_positions=positions)
    relax(sim.context, sim.restraints, settings, np.asarray(positions.value_in_unit(u.nanometer)), velocity_seed=1)
    state = sim.context.getState(getPositions=True)
    weight_after = sim.context.getParameters()[WEIGHT_PARAMETER] if weight else 0.0
    return state.getPositions(asNumpy=True).value_in_unit(u.nanometer), weight_after


def test_prior_acts_during_relaxation_md_only(chignolin):
    with_prior, weight_after = _relaxed(chignolin, 5.0)
    # Switched off again after the MD segment (and never on during minimisation).
    assert weight_after == 0.0
    # Off by default: no force is added at all.
    topology, system, _, model = chignolin
    plain = StarMDSimulation(topology, system, StarMDProposer(model, topology), platform="Reference", seed=0)
    assert WEIGHT_PARAMETER not in plain.context.getParameters()
    # The same seeds with and without the prior give different relaxed structures: the force acted.
    without_prior, _ = _relaxed(chignolin, 0.0)
    assert np.isfinite(with_prior).all()
    assert np.abs(with_prior - without_prior).max() > 1e-6


def test_prior_needs_a_starmd_proposer_and_positions(chignolin):
    topology, system, positions, model = chignolin
    settings = RelaxSettings(starmd_force_weight=1.0)
    with pytest.raises(StarMDError, match="STAR-MD proposer"):
        StarMDSimulation(topology, system, "perturb", relax=settings, platform="Reference", prior_positions=positions)
    with pytest.raises(StarMDError, match="prior_positions"):
        StarMDSimulation(topology, system, StarMDProposer(model, topology), relax=settings, platform="Reference")
