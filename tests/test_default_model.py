"""The shipped default model (openmm_starmd/weights/): loads offline, matches its recorded config, proposes
finite rigid frames for chignolin and drives one valid hybrid jump through StarMDSimulation."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
import torch
from safetensors.torch import load_file

import openmm_starmd
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.cli import build_parser
from openmm_starmd.forcefields import build_system
from openmm_starmd.model.checkpoint import DEFAULT_MODEL, default_model_path, load_model
from openmm_starmd.model.config import preset
from openmm_starmd.simulation import StarMDProposer, StarMDSimulation
from openmm_starmd.simulation.proposer import resolve_proposer
from openmm_starmd.simulation.reconstruct import AtomMap

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the default model tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shipped_weights_are_package_data_and_small():
    folder = default_model_path()
    # Package data next to the imported package: nothing is fetched.
    assert folder == Path(openmm_starmd.__file__).parent / "weights"
    assert (folder / "model.safetensors").stat().st_size < 20 * 1024 * 1024
    card = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    step = json.loads((folder / "model.json").read_text())["metadata"]["step"]
    # The card documents the checkpoint that is actually shipped.
    assert f"{step:,}" in card or str(step) in card


def test_default_model_loads_offline_with_recorded_config(offline):
    folder = default_model_path()
    recorded = json.loads((folder / "model.json").read_text())
    model, _ = openmm_starmd.load_model()  # the package root's loader; "default" is its default
    assert model.config.to_dict() == recorded["config"]
    # The `small` preset (the CPU default) with the side-chain χ head, drawing a jump in steps of ≤ 250 ps
    # for chains of up to 10 residues, fine-tuned with the structural-violation penalty at weight 30 (kept for
    # fine-tunes of it), with 16 fallback χ draws at the default temperature after its 8.
    assert model.config == preset("small", chi_head=True, max_step_ps=250.0, max_step_residues=10,
                                  violation_loss_weight=30.0, chi_fallback_draws=16)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == recorded["metadata"]["parameters"]
    # The loaded network carries exactly the shipped tensors.
    shipped = load_file(str(folder / "model.safetensors"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name
    again, config = load_model(folder)
    assert config == model.config and not again.training


def test_default_model_is_the_simulate_default(offline):
    args = build_parser().parse_args(["simulate", str(DATA / "cln025.pdb"), "--time", "1ns", "-o", "x"])
    assert args.model == DEFAULT_MODEL
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    proposer = resolve_proposer(args.model, pdb.topology)
    assert isinstance(proposer, StarMDProposer)


def test_default_model_proposes_finite_rigid_frames_for_chignolin(offline):
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    _, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    atom_map = AtomMap(topology)
    rot, trans = atom_map.frames(np.asarray(positions.value_in_unit(u.nanometer)))
    proposer = resolve_proposer(DEFAULT_MODEL, topology)
    proposer.push(rot.float(), trans.float())
    new_rot, new_trans = proposer.propose(1000.0, torch.Generator().manual_seed(0))
    assert new_rot.shape == (10, 3, 3) and new_trans.shape == (10, 3)
    assert torch.isfinite(new_rot).all() and torch.isfinite(new_trans).all()
    eye = torch.eye(3).expand(10, 3, 3)
    assert torch.allclose(new_rot.transpose(-1, -2) @ new_rot, eye, atol=1e-3)
    assert torch.allclose(torch.linalg.det(new_rot), torch.ones(10), atol=1e-3)
    # A 1 ns jump moves the chain but keeps it near the start (nm), not at an arbitrary origin.
    shift = (new_trans - trans).norm(dim=-1)
    assert 0.0 < shift.mean() < 0.3
    # The chain stays intact (folded chignolin moves ~0.05 nm CA RMSD per ns; a model that also had to
    # reproduce the tumbling of its training MD tore bonded CA-CA pairs to 0.6-0.7 nm here).
    ca_ca = (new_trans[1:] - new_trans[:-1]).norm(dim=-1)
    assert float((ca_ca - 0.38).abs().max()) < 0.1


@pytest.mark.parametrize("name", ["cln025", "amrv"])
def test_default_model_makes_a_finite_valid_jump(offline, name):
    pdb = app.PDBFile(str(DATA / f"{name}.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    start = np.asarray(positions.value_in_unit(u.nanometer))
    sim = StarMDSimulation(topology, system, DEFAULT_MODEL, jump=100.0 * u.picosecond, platform="CPU", seed=0)
    assert isinstance(sim.proposer, StarMDProposer)
    sim.context.setPositions(positions)
    sim.step(1)
    state = sim.context.getState(getPositions=True, getEnergy=True)
    xyz = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    assert sim.cycles == 1 and sim.currentStep == 1
    assert np.isfinite(xyz).all()
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
    # The structure moved (a jump happened) and is a valid protein: no CA break, no clash.
    assert np.sqrt(((xyz - start) ** 2).sum(-1)).max() > 0.05
    traj = md.Trajectory(xyz[None].astype(np.float32), md.Topology.from_openmm(topology))
    assert frame_validity(traj).valid.all()
