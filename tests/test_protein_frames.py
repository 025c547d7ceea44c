"""Backbone ⇄ frames round trip and torsions on the chignolin test trajectory."""

from pathlib import Path

import mdtraj as md
import numpy as np
import openmm.app as app
import pytest
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import protein, rigid

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def traj() -> md.Trajectory:
    return md.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))


@pytest.fixture(scope="module")
def reference(traj):
    index, mask = protein.backbone_atom_indices(traj.topology)
    return torch.from_numpy(traj.xyz)[:, index], mask


def test_backbone_indices_and_frames(traj):
    index, mask = protein.backbone_atom_indices(traj.topology)
    assert index.shape == (10, 4) and mask.all()
    names = [[traj.topology.atom(int(i)).name for i in row] for row in index]
    assert all(row == ["N", "CA", "C", "O"] for row in names)
    rot, trans, _ = protein.frames_from_positions(traj.xyz, traj.topology)
    assert rot.shape == (300, 10, 3, 3) and trans.shape == (300, 10, 3) and rot.dtype == torch.float32
    eye = torch.eye(3)
    assert (rot @ rot.transpose(-1, -2) - eye).abs().max() < 1e-6
    assert (torch.linalg.det(rot) - 1).abs().max() < 1e-6
    assert torch.allclose(trans, torch.from_numpy(traj.xyz[:, index[:, 1].numpy()]))
    # e1 points from CA to C.
    c_local = rigid.apply_inverse(rot, trans, torch.from_numpy(traj.xyz[:, index[:, 2].numpy()]))
    assert (c_local[..., 1:].abs() < 1e-5).all() and (c_local[..., 0] > 0.14).all()


def test_round_trip_exact_local_geometry(traj, reference):
    ref, mask = reference
    rot, trans, _ = protein.frames_from_positions(torch.from_numpy(traj.xyz), traj.topology)
    local = protein.backbone_local_coordinates(traj.xyz, traj.topology)
    out = protein.backbone_from_frames(rot, trans, residue_mask=mask, local=local)
    assert out.shape == (300, 10, 4, 3)
    assert (out[:, :, :3] - ref[:, :, :3]).norm(dim=-1).max() < 1e-4


def test_round_trip_ideal_geometry(traj, reference):
    ref, mask = reference
    rot, trans, _ = protein.frames_from_positions(traj.xyz, traj.topology)
    psi = protein.torsions(traj.xyz, traj.topology)[0][..., 1]
    for kwargs in ({}, {"psi": psi}):
        out = protein.backbone_from_frames(rot, trans, residue_mask=mask, **kwargs)
        err = (out - ref).norm(dim=-1)  # [T, N, 4]
        assert err[..., 1].max() < 1e-6  # CA is the origin of the frame
        # Bond-angle fluctuations of MD are not in the frame: N, C off by ~0.01 nm rms.
        assert err[..., 0].pow(2).mean().sqrt() < 0.015 and err[..., 2].pow(2).mean().sqrt() < 0.005
        # O of residues with a successor: rms within 0.02 nm (thermal out-of-plane motion allows more).
        assert err[:, :-1, 3].pow(2).mean().sqrt() < 0.02
    # Terminal O has the ideal C=O bond length.
    c_o = (out[:, -1, 3] - out[:, -1, 2]).norm(dim=-1)
    assert torch.allclose(c_o, torch.full_like(c_o, 0.1231), atol=1e-5)


def test_phi_psi_match_mdtraj(traj):
    angles, mask = protein.torsions(traj.xyz, traj.topology)
    assert angles.shape == (300, 10, 7) and mask.shape == (10, 7)
    _, phi = md.compute_phi(traj, periodic=False)
    _, psi = md.compute_psi(traj, periodic=False)
    _, omega = md.compute_omega(traj, periodic=False)
    _, chi1 = md.compute_chi1(traj, periodic=False)
    assert not mask[0, 0] and mask[1:, 0].all() and not mask[-1, 1] and mask[:-1, 1].all()
    assert np.abs(angles[:, 1:, 0].numpy() - phi).max() < 1e-4
    assert np.abs(angles[:, :-1, 1].numpy() - psi).max() < 1e-4
    # ω stored on the residue after the peptide bond.
    assert np.abs(np.angle(np.exp(1j * (angles[:, 1:, 2].numpy() - omega)))).max() < 1e-4
    # χ1 exists for all but glycine (residue 7, index 6).
    assert mask[:, 3].tolist() == [True] * 6 + [False] + [True] * 3
    assert np.abs(angles[:, mask[:, 3], 3].numpy() - chi1).max() < 1e-4


def test_openmm_topology_and_numpy_input_agree(traj):
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    rot_a, trans_a, _ = protein.frames_from_positions(traj.xyz[:5], pdb.topology)
    rot_b, trans_b, _ = protein.frames_from_positions(torch.from_numpy(traj.xyz[:5]), traj.topology)
    assert torch.equal(rot_a, rot_b) and torch.equal(trans_a, trans_b)
    # A single frame as an OpenMM Quantity is T = 1.
    rot_c, _, _ = protein.frames_from_positions(pdb.positions, pdb.topology)
    assert rot_c.shape == (1, 10, 3, 3)
    with pytest.raises(StarMDError, match="166"):
        protein.frames_from_positions(traj.xyz[:, :100], pdb.topology)


def test_caps_ligands_and_water_are_masked(traj):
    """ACE / NME caps and a water get masked residues, not crashes; neighbours still get φ/ψ."""
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    top = app.Topology()
    chain = top.addChain()
    ace = top.addResidue("ACE", chain, id="0")
    for name in ("CH3", "C", "O"):
        top.addAtom(name, app.element.carbon if name != "O" else app.element.oxygen, ace)
    for res in pdb.topology.residues():
        new = top.addResidue(res.name, chain, id=res.id)
        for atom in res.atoms():
            if atom.name != "OXT":
                top.addAtom(atom.name, atom.element, new)
    nme = top.addResidue("NME", chain, id="11")
    for name in ("N", "CH3"):
        top.addAtom(name, app.element.nitrogen if name == "N" else app.element.carbon, nme)
    water = top.addResidue("HOH", top.addChain(), id="1")
    for name in ("O", "H1", "H2"):
        top.addAtom(name, app.element.oxygen if name == "O" else app.element.hydrogen, water)
    keep = [a.index for a in pdb.topology.atoms() if a.name != "OXT"]
    rng = np.random.default_rng(0)
    pos = np.concatenate(
        [rng.normal(size=(2, 3, 3)), traj.xyz[:2, keep], rng.normal(size=(2, 5, 3))], axis=1
    ).astype(np.float32)
    rot, trans, mask = protein.frames_from_positions(pos, top)
    assert mask.tolist() == [False] + [True] * 10 + [False, False]
    assert torch.equal(rot[:, 0], torch.eye(3).expand(2, 3, 3)) and torch.equal(trans[:, -1], torch.zeros(2, 3))
    ca = protein.backbone_atom_indices(traj.topology)[0][:, 1].numpy()
    assert torch.allclose(trans[:, 1:11], torch.from_numpy(traj.xyz[:2, ca]))
    _, tmask = protein.torsions(pos, top)
    assert tmask[1, 0] and tmask[10, 1]  # φ from ACE's C, ψ to NME's N
    assert not tmask[0].any() and not tmask[-1].any() and not tmask[-2].any()
    bb = protein.backbone_from_frames(rot, trans, residue_mask=mask)
    assert torch.isfinite(bb).all() and (bb[:, ~mask] == 0).all()


def test_chain_breaks_from_numbering_and_chains():
    top = app.Topology()
    a, b = top.addChain(), top.addChain()
    for chain, ids in ((a, ["1", "2", "4"]), (b, ["5", "6"])):
        for rid in ids:
            top.addResidue("GLY", chain, id=rid)
    assert protein.chain_breaks(protein.residue_records(top)).tolist() == [True, False, True, True, False]
