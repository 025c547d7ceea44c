"""StarMDSimulation: reporters see simulated time, checkpoints continue exactly, guards stop bad jumps."""

import io
import struct
from dataclasses import replace
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.forcefields import build_system
from openmm_starmd.simulation import hybrid
from openmm_starmd.simulation.guards import GuardSettings
from openmm_starmd.simulation.hybrid import JumpRejectedError, StarMDSimulation
from openmm_starmd.simulation.proposer import PerturbationProposer
from openmm_starmd.simulation.relax import RelaxSettings

DATA = Path(__file__).parent / "data"
# Short relaxations keep the Reference platform fast; the physics is not under test here.
QUICK = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2)
JUMP_PS = 1000.0
GENTLE = {"rotation_sigma_rad": 0.02, "translation_sigma_nm": 0.005}  # small moves: no rejections by chance


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    return topology, system, positions


def make(chignolin, proposer=None, seed=7, guards=None):
    topology, system, positions = chignolin
    sim = StarMDSimulation(topology, system, proposer or PerturbationProposer(**GENTLE), jump=JUMP_PS * u.picosecond,
                           relax=QUICK, guards=guards, platform="Reference", seed=seed)
    sim.context.setPositions(positions)
    return sim


def state_of(sim):
    state = sim.context.getState(positions=True, velocities=True)
    return (state.getPositions(asNumpy=True).value_in_unit(u.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond))


def assert_valid(sim, topology):
    positions, _ = state_of(sim)
    assert np.isfinite(positions).all()
    assert frame_validity(md.Trajectory(positions[None], md.Topology.from_openmm(topology))).valid[0]


class Flaky(PerturbationProposer):
    """Every ``period``-th proposal is broken in the way ``kind`` says; records the Δt it was asked for."""

    def __init__(self, kind, period=2, when=None):
        super().__init__(**GENTLE)
        self.kind, self.period, self.when, self.calls, self.dts, self.pushes = kind, period, when, 0, [], 0

    def push(self, rotations, translations):
        self.pushes += 1
        super().push(rotations, translations)

    def propose(self, dt_ps, generator):
        rot, trans = super().propose(dt_ps, generator)
        self.calls += 1
        self.dts.append(dt_ps)
        broken = self.when(dt_ps) if self.when else self.calls % self.period == 1
        if not broken:
            return rot, trans
        if self.kind == "nan":
            return rot, trans * float("nan")
        # Wildly wrong: every residue thrown several nm in a random direction.
        return rot, trans + 5.0 * torch.randn(trans.shape, generator=generator)


def test_reporters_record_simulated_time(chignolin, tmp_path):
    topology = chignolin[0]
    sim = make(chignolin)
    text = io.StringIO()
    sim.reporters += [
        app.StateDataReporter(text, 1, step=True, time=True, potentialEnergy=True, speed=True),
        app.XTCReporter(str(tmp_path / "t.xtc"), 1),
        app.DCDReporter(str(tmp_path / "t.dcd"), 2),
    ]
    context = sim.context
    sim.step(3)
    sim.run(1 * u.nanosecond)
    assert sim.context is context  # one Context for the whole run
    assert sim.currentStep == 4 and sim.context.getTime().value_in_unit(u.picosecond) == pytest.approx(4 * JUMP_PS)
    rows = [line.split(",") for line in text.getvalue().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    assert [float(r[1]) for r in rows] == pytest.approx([JUMP_PS * k for k in (1, 2, 3, 4)])
    assert all(np.isfinite(float(r[2])) for r in rows)
    del sim  # closes the DCD file
    xtc = md.load(str(tmp_path / "t.xtc"), top=md.Topology.from_openmm(topology))
    assert xtc.n_frames == 4
    assert xtc.time == pytest.approx([JUMP_PS * k for k in (1, 2, 3, 4)])
    data = (tmp_path / "t.dcd").read_bytes()
    _, *_cord, n_frames, first, interval, _a, _b, _c, _d, _e, _f, dt_akma = struct.unpack("<i4c9if", data[:48])
    dt_ps = dt_akma * 0.04888821
    assert n_frames == 2
    assert [(first + k * interval) * dt_ps for k in range(n_frames)] == pytest.approx([2 * JUMP_PS, 4 * JUMP_PS],
                                                                                     rel=1e-6)
    with pytest.raises(Exception, match="whole number"):
        make(chignolin).run(1.5 * u.nanosecond)


def test_checkpoint_then_continue_is_identical(chignolin, tmp_path):
    straight = make(chignolin)
    straight.step(3)
    first = make(chignolin)
    first.reporters.append(app.CheckpointReporter(str(tmp_path / "run.chk"), 1))
    first.step(1)
    resumed = make(chignolin, seed=999)  # everything random must come from the checkpoint, not the seed
    resumed.loadCheckpoint(str(tmp_path / "run.chk"))
    assert resumed.currentStep == 1
    resumed.step(2)
    for a, b in zip(state_of(straight), state_of(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.context.getTime() == straight.context.getTime()
    buffer = io.BytesIO()
    resumed.saveCheckpoint(buffer)
    assert buffer.getvalue()[8:9] == b"{"  # a safetensors header, nothing pickled


def test_nan_and_wild_proposals_are_resampled(chignolin, monkeypatch):
    topology = chignolin[0]
    seen = []
    original = hybrid.relax

    def checked_relax(context, restraints, settings, positions, seed):
        seen.append(np.isfinite(positions).all())
        return original(context, restraints, settings, positions, seed)

    monkeypatch.setattr(hybrid, "relax", checked_relax)
    for kind, reason in (("nan", "nonfinite_proposal"), ("wild", "torn_target")):
        proposer = Flaky(kind)
        sim = make(chignolin, proposer)
        sim.step(2)
        assert sim.rejections[reason] == 2  # the first proposal of each jump
        assert sum(sim.rejections.values()) == 2
        assert proposer.calls == 4 and proposer.pushes == 1 + 2
        assert_valid(sim, topology)
        # Raw validity: every draw is counted, before guards and relaxation; the broken ones are invalid.
        assert sim.totals.proposals == 4 and sim.totals.raw_valid == 2
        assert sim.validity()["raw_valid_fraction"] == 0.5 and sim.validity()["rejection_rate"] == 0.5
        assert sim.validity()["raw_failures"][{"nan": "nonfinite_proposal", "wild": "ca_break"}[kind]] == 2
        assert sum(sim.validity()["raw_failures"].values()) == 2
        assert sim.last_cycle.proposals == 2 and sim.last_cycle.raw_valid == 1
    assert seen and all(seen)  # OpenMM never saw a non-finite position
    assert len(seen) == 4  # and never relaxed a rejected proposal


def test_a_relaxation_openmm_fails_is_run_again_with_the_longer_minimisation(chignolin, monkeypatch):
    original = hybrid.relax
    calls, failing = [], []

    def flaky_relax(context, restraints, settings, positions, seed):
        calls.append((settings.minimize_iterations, seed))
        if len(calls) in failing:
            raise openmm.OpenMMException("Particle coordinate is NaN")  # what a blown-up MD segment raises
        return original(context, restraints, settings, positions, seed)

    monkeypatch.setattr(hybrid, "relax", flaky_relax)
    failing[:] = [1]
    sim = make(chignolin)
    sim.step(1)
    assert [it for it, _ in calls] == [QUICK.minimize_iterations, QUICK.retry_minimize_iterations]
    assert calls[0][1] == calls[1][1]  # the same target and velocity seed, longer minimisation
    assert sum(sim.rejections.values()) == 0 and sim.totals.relax_retries == 1
    assert sim.validity()["relax_retries"] == 1 and sim.last_cycle.relax_retries == 1
    # both attempts fail: the proposal is rejected and the next one relaxed as usual
    calls.clear()
    failing[:] = [1, 2]
    sim = make(chignolin)
    sim.step(1)
    assert [it for it, _ in calls] == [5, 500, 5]
    assert sim.rejections["openmm_error"] == 1 and sim.totals.relax_retries == 1
    # without the retry the first failure rejects the proposal
    calls.clear()
    failing[:] = [1]
    topology, system, positions = chignolin
    sim = StarMDSimulation(topology, system, PerturbationProposer(**GENTLE), jump=JUMP_PS * u.picosecond,
                           relax=replace(QUICK, retry_minimize_iterations=0), platform="Reference", seed=7)
    sim.context.setPositions(positions)
    sim.step(1)
    assert [it for it, _ in calls] == [5, 5]
    assert sim.rejections["openmm_error"] == 1 and sim.totals.relax_retries == 0
    assert_valid(sim, topology)


def test_failed_jumps_are_retried_at_half_the_time_step(chignolin):
    proposer = Flaky("nan", when=lambda dt: dt > JUMP_PS / 2 + 1e-9)
    sim = make(chignolin, proposer, guards=GuardSettings(max_resamples=1, max_halvings=1))
    sim.step(2)
    assert proposer.dts == [JUMP_PS, JUMP_PS, JUMP_PS / 2, JUMP_PS / 2] * 2
    assert sim.halvings == 2 and sim.rejections["nonfinite_proposal"] == 4
    assert proposer.pushes == 1 + 4
    assert sim.currentStep == 2 and sim.context.getTime().value_in_unit(u.picosecond) == pytest.approx(2 * JUMP_PS)


def test_hopeless_jump_raises_and_leaves_state(chignolin):
    sim = make(chignolin, Flaky("nan", when=lambda dt: True), guards=GuardSettings(max_resamples=1, max_halvings=1))
    before = state_of(sim)
    with pytest.raises(JumpRejectedError, match="failed the guards"):
        sim.step(1)
    assert sim.currentStep == 0 and sim.context.getTime().value_in_unit(u.picosecond) == 0.0
    np.testing.assert_array_equal(state_of(sim)[0], before[0])
    assert sim.rejections["nonfinite_proposal"] == 4  # 2 at Δt, then 2 at Δt/2 for the first half
    assert not sim.started  # after a failed halving the history restarts from the restored structure


def test_callers_system_is_not_changed_and_states_restart_history(chignolin):
    _, system, _ = chignolin
    forces = system.getNumForces()
    sim = make(chignolin)
    assert system.getNumForces() == forces and sim.system.getNumForces() == forces + 1
    sim.step(1)
    xml = io.StringIO()
    sim.saveState(xml)
    other = make(chignolin)
    other.loadState(io.StringIO(xml.getvalue()))
    assert not other.started  # a State carries no proposer history: it restarts from the loaded frame
    np.testing.assert_array_equal(state_of(other)[0], state_of(sim)[0])
    other.step(1)
    assert other.currentStep == 2 and other.context.getTime().value_in_unit(u.picosecond) == pytest.approx(2 * JUMP_PS)


def test_raw_validity_uses_validates_criteria(chignolin):
    """The cached scorer behind raw validity and the relaxed-structure guard agrees with frame_validity
    (``starmd validate``) on valid, torn, clashing and non-finite structures."""
    topology, _, positions = chignolin
    sim = make(chignolin)
    xyz = np.asarray(positions.value_in_unit(u.nanometer))
    md_top = md.Topology.from_openmm(topology)
    ca = [a.index for a in topology.atoms() if a.name == "CA"]
    residue_atoms = [[a.index for a in r.atoms()] for r in topology.residues()]
    torn = xyz.copy()
    bond = xyz[ca[5]] - xyz[ca[4]]
    after = [i for atoms in residue_atoms[5:] for i in atoms]
    torn[after] += 0.3 * bond / np.linalg.norm(bond)  # chain pulled apart after residue 4
    clash = xyz.copy()
    clash[ca[7]] = xyz[ca[2]] + [0.05, 0.0, 0.0]                   # one CA almost on another
    nonfinite = xyz.copy()
    nonfinite[3] = np.nan
    rng = np.random.default_rng(0)
    noisy = [xyz + rng.normal(0.0, s, xyz.shape) for s in (0.005, 0.02, 0.05)]
    for structure in (xyz, torn, clash, nonfinite, *noisy):
        expected = bool(frame_validity(md.Trajectory(structure[None].astype(np.float32), md_top)).valid[0])
        assert (sim.guard.raw_failure(structure) is None) == expected
    assert sim.guard.raw_failure(xyz) is None and sim.guard.raw_failure(clash) is not None
    assert sim.guard.scorer.failure(torn) == "ca_break"


@pytest.mark.parametrize("seed", [0, 3])
def test_a_seed_reproduces_the_run_seed_zero_too(chignolin, seed):
    # OpenMM reads an integrator seed of 0 as "pick one at random": seed 0 must not mean that here. One run at
    # a time: the Reference platform's Langevin noise comes from one stream shared by every live Context.
    states = []
    for _ in range(2):
        sim = make(chignolin, seed=seed)
        sim.step(2)
        states.append(state_of(sim))
        del sim
    (pos_a, vel_a), (pos_b, vel_b) = states
    np.testing.assert_array_equal(pos_a, pos_b)
    np.testing.assert_array_equal(vel_a, vel_b)
