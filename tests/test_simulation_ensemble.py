"""Replica ensembles (StarMDEnsemble, `starmd simulate --replicas`), devices, and multi-chain inputs."""

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
from devicecheck import DeviceCheck

from openmm_starmd import StarMDEnsemble, StarMDSimulation
from openmm_starmd.data.featurize import CHAIN_INDEX_GAP, featurize_topology
from openmm_starmd.forcefields import build_system
from openmm_starmd.rollout import Rollout
from openmm_starmd.simulation import run as run_module
from openmm_starmd.simulation.guards import Guard, GuardSettings
from openmm_starmd.simulation.reconstruct import AtomMap
from openmm_starmd.simulation.relax import RelaxSettings

DATA = Path(__file__).parent / "data"
QUICK = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2)
# Host-side code that builds CPU tensors on purpose (atoms and topology tables live on the host).
HOST = ("AtomMap.__init__", "AtomMap.frames", "AtomMap.move_atoms", "AtomMap.move_atoms.<locals>.<genexpr>",
        "backbone_atom_indices", "chain_breaks", "IGSO3.__init__")


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    return build_system(pdb.topology, pdb.positions, "implicit-fast")


def positions_of(sim):
    return sim.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)


def test_ensemble_batches_first_draws_retries_alone_and_matches_single_runs(chignolin, monkeypatch):
    system, topology, positions = chignolin
    calls = []
    original = Rollout.sample

    def recording(self, dt_ps, generators, replicas=None):
        calls.append(None if replicas is None else list(replicas))
        return original(self, dt_ps, generators, replicas=replicas)

    monkeypatch.setattr(Rollout, "sample", recording)
    check = DeviceCheck("cpu", allow=HOST)
    with check:  # no tensor factory without an explicit device anywhere in the cycle
        ens = StarMDEnsemble(topology, system, "default", replicas=2, jump=100.0, relax=QUICK, platform="Reference",
                             seed=7, device="cpu")
        for sim in ens.simulations:
            sim.context.setPositions(positions)
        guard = ens.simulations[1].guard
        first = {"left": 1}

        def reject_once(rot, trans):  # replica 1's first proposal is refused: it re-samples alone
            if first["left"]:
                first["left"] -= 1
                return "bad_rotation"
            return Guard.check_proposal(guard, rot, trans)

        monkeypatch.setattr(guard, "check_proposal", reject_once)
        ens.step(1)
    assert check.checked > 0
    # One batched draw for both; every re-sample (replica 1's forced one, any real rejection) is one replica alone.
    assert calls[0] == [0, 1] and [1] in calls[1:] and all(len(c) == 1 for c in calls[1:])
    assert [sim.currentStep for sim in ens.simulations] == [1, 1]
    assert ens.simulations[1].rejections["bad_rotation"] == 1
    assert ens.validity()["raw_proposals"] == 2 + ens.validity()["rejections"] == 1 + len(calls)
    # Replica 0 is the single run seeded 7 (the batched draw agrees to float rounding, 2e-5 nm).
    single = StarMDSimulation(topology, system, "default", jump=100.0, relax=QUICK, platform="Reference", seed=7,
                              device="cpu")
    single.context.setPositions(positions)
    single.step(1)
    assert np.abs(positions_of(single) - positions_of(ens.simulations[0])).max() < 0.05
    assert np.abs(positions_of(ens.simulations[0]) - positions_of(ens.simulations[1])).max() > 0.01


def ensemble_run(out, time_ps, resume=False):
    return run_module.run_simulation(DATA / "cln025.pdb", out, time_ps=time_ps, jump_ps=100.0, model="default",
                                     relax=QUICK, seed=3, platform="Reference", forcefield="implicit-fast",
                                     resume=resume, progress=False, device="cpu", replicas=2)


def test_killed_ensemble_resumes_every_replica_exactly(tmp_path, monkeypatch):
    straight = ensemble_run(tmp_path / "straight", 200.0)
    calls = {"n": 0}
    original = StarMDEnsemble.saveCheckpoint

    def dies_at_second_checkpoint(self, file):
        calls["n"] += 1
        if calls["n"] == 2:  # both replicas' frame 2 are written, the checkpoint is not
            raise KeyboardInterrupt
        original(self, file)

    monkeypatch.setattr(StarMDEnsemble, "saveCheckpoint", dies_at_second_checkpoint)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        ensemble_run(out, 200.0)
    monkeypatch.setattr(StarMDEnsemble, "saveCheckpoint", original)
    ensemble_run(out, 200.0, resume=True)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["settings"]["replicas"] == 2 and record["jumps_done"] == 4
    assert [m["seed"] for m in record["members"]] == [3, 4] and record["validity"]["frames"] == 4
    for k in range(2):
        got = md.load(str(out / f"traj_R{k}.xtc"), top=str(out / "topology.pdb"))
        want = md.load(str(straight / f"traj_R{k}.xtc"), top=str(straight / "topology.pdb"))
        assert got.time.tolist() == pytest.approx([100.0, 200.0])
        np.testing.assert_array_equal(got.xyz, want.xyz)  # the resumed replica is the uninterrupted one
    assert not (out / "traj.xtc").exists()


def test_two_chains_reach_the_network_apart_and_are_not_bonded():
    from openmm_starmd import prep

    prepared = prep.prepare(DATA / "nug2.pdb")  # 1MI0 chains A and B
    topology = prepared.topology
    features = featurize_topology(topology)
    chains = features.chain_index.tolist()
    first_b = chains.index(1)
    assert features.chain_break[first_b]
    assert features.residue_index[first_b] - features.residue_index[first_b - 1] == CHAIN_INDEX_GAP
    assert (features.residue_index[1:] > features.residue_index[:-1]).all()  # one increasing numbering
    atom_map = AtomMap(topology)
    guard = Guard(topology, atom_map.backbone, GuardSettings())
    chain_of = {a.index: a.residue.chain.index for a in topology.atoms()}
    assert len(guard.bonded_ca) == len(chains) - 2  # consecutive pairs within each chain only
    assert all(chain_of[int(i)] == chain_of[int(j)] for i, j in guard.bonded_ca)
    # A mapped target whose two chains sit 5 nm apart is not "torn": a chain break is no bond.
    xyz = np.asarray(prepared.positions.value_in_unit(u.nanometer))
    apart = xyz.copy()
    apart[[i for i, c in chain_of.items() if c == 1]] += 5.0
    assert guard.check_target(apart) is None
