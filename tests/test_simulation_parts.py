"""Building blocks of the hybrid simulation: proposer registry, all-atom mapping, relaxation, guards."""

from importlib.metadata import entry_points
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import build_system
from openmm_starmd.frames import rigid
from openmm_starmd.frames.protein import frames_from_positions
from openmm_starmd.simulation import proposer as proposers
from openmm_starmd.simulation.guards import Guard, GuardSettings, chirality_signs
from openmm_starmd.simulation.reconstruct import AtomMap, require_implicit_solvent
from openmm_starmd.simulation.relax import RESTRAINT_K, BackboneRestraints, RelaxSettings, relax

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    return topology, system, np.asarray(positions.value_in_unit(u.nanometer))


# ------------------------------------------------------------------------------------- proposers
def test_registry_has_entry_point_and_builtins(chignolin):
    topology, _, _ = chignolin
    group = {ep.name: ep.value for ep in entry_points(group=proposers.ENTRY_POINT_GROUP)}
    assert group["starmd"] == "openmm_starmd.simulation.proposer:StarMDProposerFactory"
    assert {"starmd", "perturb"} <= set(proposers.available_proposers())
    assert isinstance(proposers.resolve_proposer("perturb", topology), proposers.PerturbationProposer)
    with pytest.raises(StarMDError, match="not found"):
        proposers.resolve_proposer("no-such-model", topology)
    # Without a model option the `starmd` factory uses the shipped default model; so do None and "default".
    for spec in ("starmd", "default", None):
        assert isinstance(proposers.resolve_proposer(spec, topology), proposers.StarMDProposer)
    with pytest.raises(StarMDError, match="not found"):
        proposers.resolve_proposer("/nonexistent/model_dir", topology)


def test_user_proposer_plugs_in_by_name(chignolin):
    topology, _, _ = chignolin

    class Frozen(proposers.HistoryProposer):
        def propose(self, dt_ps, generator):
            return self.last()

    class FrozenFactory(proposers.ProposerFactory):
        def create_proposer(self, topology, **options):
            return Frozen()

    proposers.register_proposer("frozen-test", FrozenFactory)
    assert "frozen-test" in proposers.available_proposers()
    assert isinstance(proposers.resolve_proposer("frozen-test", topology), Frozen)


def test_perturbation_proposer_is_reproducible_and_keeps_history(chignolin):
    topology, _, positions = chignolin
    rot, trans = AtomMap(topology).frames(positions)
    p = proposers.PerturbationProposer()
    p.push(rot, trans)
    a = p.propose(1000.0, torch.Generator().manual_seed(5))
    b = p.propose(1000.0, torch.Generator().manual_seed(5))
    c = p.propose(1000.0, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(p.last()[1], trans.float())  # propose does not append
    eye = torch.eye(3).expand_as(a[0])
    assert torch.allclose(a[0].transpose(-1, -2) @ a[0], eye, atol=1e-5)
    shift = (a[1] - trans.float()).norm(dim=-1)
    assert 0.0 < shift.mean() < 0.1
    q = proposers.PerturbationProposer()
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.propose(1000.0, torch.Generator().manual_seed(5))[1], a[1])


# ------------------------------------------------------------------------------------ reconstruct
def test_frames_match_the_frames_module(chignolin):
    topology, _, positions = chignolin
    rot, trans = AtomMap(topology).frames(positions)
    ref_rot, ref_trans, mask = frames_from_positions(positions[None], topology)
    assert mask.all()
    assert torch.allclose(rot.float(), ref_rot[0], atol=1e-5)
    assert torch.allclose(trans.float(), ref_trans[0], atol=1e-6)


def test_identity_move_keeps_atoms_and_rebuilds_carbonyls(chignolin):
    topology, _, positions = chignolin
    amap = AtomMap(topology)
    frames = amap.frames(positions)
    moved = amap.move_atoms(positions, frames, frames)
    oxygens = amap.carbonyl[:, 1]
    others = np.setdiff1d(np.arange(len(positions)), oxygens)
    assert len(oxygens) == topology.getNumResidues() - 1  # every peptide bond, not the C-terminus
    np.testing.assert_allclose(moved[others], positions[others], atol=1e-12)
    c = amap.backbone[amap.carbonyl[:, 0], 2]
    np.testing.assert_allclose(np.linalg.norm(moved[oxygens] - moved[c], axis=1), 0.1231, atol=1e-5)
    assert np.abs(moved[oxygens] - positions[oxygens]).max() < 0.03


def test_global_rigid_motion_moves_every_atom_rigidly(chignolin):
    topology, _, positions = chignolin
    amap = AtomMap(topology)
    rot, trans = amap.frames(positions)
    g = torch.Generator().manual_seed(0)
    r = rigid.random_rotations((), g).double()
    t = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    moved = amap.move_atoms(positions, (rot, trans), rigid.compose(r, t, rot, trans))
    identity = amap.move_atoms(positions, (rot, trans), (rot, trans))
    expected = rigid.apply(r, t, torch.as_tensor(identity)).numpy()
    np.testing.assert_allclose(moved, expected, atol=2e-6)


def test_per_residue_moves_keep_each_residue_rigid(chignolin):
    topology, _, positions = chignolin
    amap = AtomMap(topology)
    rot, trans = amap.frames(positions)
    g = torch.Generator().manual_seed(1)
    new_rot = rot @ rigid.so3_exp(0.3 * torch.randn(len(rot), 3, generator=g, dtype=torch.float64))
    new_trans = trans + 0.05 * torch.randn(len(rot), 3, generator=g, dtype=torch.float64)
    moved = amap.move_atoms(positions, (rot, trans), (new_rot, new_trans))
    oxygens = set(amap.carbonyl[:, 1].tolist())
    for residue in topology.residues():
        atoms = [a.index for a in residue.atoms() if a.index not in oxygens]
        before = np.linalg.norm(positions[atoms][:, None] - positions[atoms][None], axis=-1)
        after = np.linalg.norm(moved[atoms][:, None] - moved[atoms][None], axis=-1)
        np.testing.assert_allclose(after, before, atol=1e-9)
        ca = amap.backbone[residue.index, 1]
        np.testing.assert_allclose(moved[ca], new_trans[residue.index].numpy(), atol=1e-12)


def test_explicit_water_is_refused(chignolin):
    topology, system, _ = chignolin
    require_implicit_solvent(topology, system)
    wet = app.Topology()
    chain = wet.addChain()
    for residue in topology.residues():
        new = wet.addResidue(residue.name, chain)
        for atom in residue.atoms():
            wet.addAtom(atom.name, atom.element, new)
    water = wet.addResidue("HOH", wet.addChain())
    wet.addAtom("O", app.element.oxygen, water)
    with pytest.raises(StarMDError, match="explicit-water"):
        require_implicit_solvent(wet, system)


# ------------------------------------------------------------------------------------------ relax
def test_ramp_and_settings_validation():
    assert RelaxSettings(restraint_k=900.0, ramp_stages=4).stage_strengths() == [900.0, 600.0, 300.0, 0.0]
    assert RelaxSettings(restraint_k=900.0, ramp_stages=1).stage_strengths() == [900.0]
    with pytest.raises(StarMDError):
        RelaxSettings(ramp_stages=0)
    with pytest.raises(StarMDError):
        RelaxSettings(time_ps=-1.0)


def test_restraint_energy_targets_and_ramp_end(chignolin):
    topology, system, positions = chignolin
    amap = AtomMap(topology)
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    restraints = BackboneRestraints(amap.restrained_atoms)
    group = restraints.add_to(system)
    assert len(amap.restrained_atoms) == 4 * topology.getNumResidues()
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.004)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    restraints.set_targets(context, positions + 0.1)  # every restrained atom 0.1 nm off per axis
    restraints.set_strength(context, 1000.0)
    state = context.getState(energy=True, groups={group})
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert energy == pytest.approx(0.5 * 1000.0 * 0.03 * len(amap.restrained_atoms), rel=1e-5)

    # Minimisation only, stiff restraints: the backbone stays on its target; the constant ends at 0.
    target = positions.copy()
    relax(context, restraints, RelaxSettings(time_ps=0.0, restraint_k=1e5, minimize_iterations=20), target, 1)
    relaxed = context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    bb = amap.restrained_atoms
    assert np.sqrt(((relaxed[bb] - target[bb]) ** 2).sum(-1).mean()) < 0.01
    assert context.getParameter(RESTRAINT_K) == 0.0
    params = restraints.force.getParticleParameters(0)
    assert params[0] == bb[0]
    np.testing.assert_allclose(params[1], target[bb[0]], atol=1e-12)


# ----------------------------------------------------------------------------------------- guards
def test_guards_reject_bad_structures(chignolin):
    topology, _, positions = chignolin
    amap = AtomMap(topology)
    guard = Guard(topology, amap.backbone, GuardSettings())
    guard.set_reference(positions)
    rot, trans = amap.frames(positions)
    assert guard.check_proposal(rot, trans) is None
    assert guard.check_proposal(rot, trans * float("nan")) == "nonfinite_proposal"
    assert guard.check_proposal(-rot, trans) == "bad_rotation"  # improper (det -1)
    assert guard.check_proposal(2 * rot, trans) == "bad_rotation"
    assert guard.check_relaxed(positions, -1000.0) is None
    assert guard.check_relaxed(positions, float("inf")) == "nonfinite_energy"
    torn = positions.copy()
    torn[amap.atom_frame >= 5] += 1.0  # tear the chain between residues 5 and 6
    assert guard.check_target(torn) == "torn_target"
    assert guard.check_relaxed(torn, 0.0) == "ca_break"
    squashed = positions.copy()
    squashed[amap.atom_frame == 7] += positions[amap.backbone[2, 1]] - positions[amap.backbone[7, 1]]
    assert guard.check_relaxed(squashed, 0.0) in ("ca_break", "ca_clash", "heavy_clash")
    mirrored = positions * np.array([1.0, 1.0, -1.0])
    assert guard.check_relaxed(mirrored, 0.0) == "chirality_flip"


def test_l_residues_share_one_handedness(chignolin):
    topology, _, positions = chignolin
    amap = AtomMap(topology)
    guard = Guard(topology, amap.backbone, GuardSettings())
    signs = chirality_signs(positions, guard.chiral)
    assert len(signs) == sum(r.name != "GLY" for r in topology.residues())
    assert len(set(signs.tolist())) == 1
    ref = md.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))[::50]
    for frame in ref.xyz.astype(np.float64):
        np.testing.assert_array_equal(chirality_signs(frame, guard.chiral), signs)
