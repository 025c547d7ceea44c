"""The STAR-MD rollout as a proposer (tiny preset, random weights): loading, guarding, exact checkpoints."""

import io
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from openmm_starmd.forcefields import build_system
from openmm_starmd.frames import rigid
from openmm_starmd.model.checkpoint import save_model
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import StarMDSimulation
from openmm_starmd.simulation.proposer import StarMDProposer, resolve_proposer
from openmm_starmd.simulation.relax import RelaxSettings

DATA = Path(__file__).parent / "data"
QUICK = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    torch.manual_seed(0)
    folder = save_model(tmp_path_factory.mktemp("model") / "tiny", StarMDNetwork(preset("tiny")))
    return topology, system, positions, folder


class Damped(StarMDProposer):
    """Untrained weights throw residues nm apart; squashing each move below 0.005 nm makes jumps acceptable,
    so the rollout's history (KV cache) is exercised through accepted cycles and checkpoints."""

    def push(self, rotations, translations):
        self.last = (rotations.float(), translations.float())
        super().push(rotations, translations)

    def propose(self, dt_ps, generator):
        rot, trans = super().propose(dt_ps, generator)
        last_rot, last_trans = self.last
        return rigid.interpolate(last_rot, rot, 0.01), last_trans + 0.005 * torch.tanh(trans - last_trans)


def test_model_folder_resolves_to_the_starmd_rollout(setup):
    topology, system, positions, folder = setup
    proposer = resolve_proposer(str(folder), topology)
    assert isinstance(proposer, StarMDProposer)
    sim = StarMDSimulation(topology, system, proposer, relax=QUICK, platform="Reference", seed=0,
                           guards=GuardSettings(max_resamples=1, max_halvings=0))
    sim.context.setPositions(positions)
    proposer.num_steps = 2
    proposer.reset()
    # Random weights propose torn chains: every proposal is rejected and the step does not count.
    with pytest.raises(Exception, match="failed the guards"):
        sim.step(1)
    # Each of the 2 tries (first sample + 1 re-sample) is rejected, whichever guard catches it.
    assert sum(sim.rejections.values()) == 2 and sim.currentStep == 0


@pytest.mark.parametrize("max_step_ps", [None, 250.0])
def test_rollout_history_survives_checkpoints_exactly(setup, max_step_ps):
    topology, system, positions, folder = setup
    model = resolve_proposer(str(folder), topology).model

    def make(seed):
        proposer = Damped(model, topology, num_steps=2, max_step_ps=max_step_ps)
        sim = StarMDSimulation(topology, system, proposer, jump=1 * u.nanosecond, relax=QUICK, platform="Reference",
                               seed=seed)
        sim.context.setPositions(positions)
        return sim

    straight = make(4)
    straight.step(3)
    # the start frame, then per 1 ns jump its accepted frame (after three intermediate 250 ps frames)
    frames_per_jump = 1 if max_step_ps is None else 4
    assert sum(straight.rejections.values()) == 0 and straight.proposer.rollout.count == 1 + 3 * frames_per_jump
    first = make(4)
    first.step(1)
    buffer = io.BytesIO()
    first.saveCheckpoint(buffer)
    buffer.seek(0)
    resumed = make(11)
    resumed.loadCheckpoint(buffer)
    resumed.proposer.last = first.proposer.last  # the damping wrapper's own memory (not rollout state)
    resumed.step(2)
    a = straight.context.getState(positions=True).getPositions(asNumpy=True)
    b = resumed.context.getState(positions=True).getPositions(asNumpy=True)
    np.testing.assert_array_equal(np.asarray(a._value), np.asarray(b._value))
