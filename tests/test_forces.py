"""StarMDForce: the STAR-MD score as OpenMM forces through openmm-torch."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import mdtraj as md
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest
import torch

from openmm_starmd.errors import StarMDError
from openmm_starmd.forces import (
    WEIGHT_PARAMETER,
    StarMDForce,
    add_starmd_force,
    frame_score_forces,
    set_starmd_weight,
    starmd_force_on,
)
from openmm_starmd.frames.rigid import frames_from_three_points, random_rotations, so3_log
from openmm_starmd.model.checkpoint import save_model
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.units import kt_kj_per_mol

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def random_network(seed: int = 0) -> StarMDNetwork:
    """Tiny network with every weight perturbed (the zero-initialised heads would give a trivial score)."""
    torch.manual_seed(seed)
    net = StarMDNetwork(preset("tiny"))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    traj = md.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))
    return pdb.topology, traj.xyz


@pytest.fixture(scope="module")
def built(chignolin, tmp_path_factory):
    """A StarMDForce on chignolin (context: 2 frames, Δt 100 ps) in a System of free particles."""
    topology, xyz = chignolin
    module = StarMDForce(random_network(), topology, xyz[:2], dt_ps=100.0, temperature=310.0)
    path = tmp_path_factory.mktemp("force") / "starmd.pt"
    force = module.create_openmm_force(path, weight=1.0)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(force)
    return module, system, path


def openmm_forces(system: openmm.System, positions: np.ndarray, platform: str, weight: float | None = None):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    if weight is not None:
        set_starmd_weight(context, weight)
    state = context.getState(getForces=True, getEnergy=True)
    return state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer), state


def autograd_forces(module: StarMDForce, positions: np.ndarray) -> np.ndarray:
    """kT Jᵀ score by differentiating the frames of the atoms (independent of the closed form)."""
    rot_score, trans_score = module.frame_scores(positions)
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    idx = module.atom_index
    rot, trans = frames_from_three_points(x[idx[:, 0]], x[idx[:, 1]], x[idx[:, 2]])
    omega = so3_log(rot.detach().transpose(-1, -2) @ rot)  # body rotation vector, 0 at the current frame
    surrogate = (trans_score.double() * trans).sum() + (rot_score.double() * omega).sum()
    (grad,) = torch.autograd.grad(module.kt * surrogate, x)
    return grad.numpy()


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_openmm_forces_equal_python_score(built, chignolin, platform):
    module, system, _ = built
    _, xyz = chignolin
    positions = xyz[60].astype(np.float64)
    forces, state = openmm_forces(system, positions, platform)
    expected = autograd_forces(module, positions)
    scale = np.abs(expected).max()
    assert scale > 1.0  # a real, non-trivial force (kJ/mol/nm)
    assert np.abs(forces - expected).max() <= 1e-4 * scale
    backbone = np.zeros(len(positions), dtype=bool)
    backbone[module.atom_index.reshape(-1).numpy()] = True
    assert np.all(forces[~backbone] == 0.0)  # side chains and H untouched
    assert state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) == 0.0  # non-conservative: energy 0


def test_frame_scores_match_the_rollout_denoiser(built, chignolin):
    """The score uses the context exactly as the simulator's Rollout does (sequential pushes, KV cache)."""
    from openmm_starmd.data.featurize import featurize_topology
    from openmm_starmd.denoiser import make_denoiser
    from openmm_starmd.frames.protein import frames_from_positions
    from openmm_starmd.model.tokens import relative
    from openmm_starmd.rollout import Rollout

    module, _, _ = built
    topology, xyz = chignolin
    rollout = Rollout(module.network, featurize_topology(topology))
    rot, trans, _ = frames_from_positions(xyz[:2], topology)
    for t in range(2):
        rollout.push(rot[t], trans[t])
    cur_rot, cur_trans, _ = frames_from_positions(xyz[60], topology)
    rel_rot, rel_x = relative(rot[1], trans[1], cur_rot[0], cur_trans[0], module.scale)
    denoise = make_denoiser(module.network, rollout.diffusion, rollout.residues, rot[1][None, None],
                        trans[1][None, None], 100.0, torch.tensor([2]), rollout.cache)
    with torch.no_grad():
        rot0, x0 = denoise(rel_rot[None, None], rel_x[None, None], module.tau)
    tau = torch.tensor(module.tau)
    want_rot = rollout.diffusion.so3.score(rel_rot, rot0[0, 0], tau)
    want_trans = torch.einsum("nij,nj->ni", rot[1], rollout.diffusion.r3.score(rel_x, x0[0, 0], tau)) * module.scale
    got_rot, got_trans = module.frame_scores(xyz[60])
    assert want_rot.abs().max() > 1.0 and want_trans.abs().max() > 1.0
    torch.testing.assert_close(got_rot, want_rot, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(got_trans, want_trans, rtol=1e-4, atol=1e-3)


def test_weight_parameter_scales_forces(built, chignolin):
    _, system, _ = built
    positions = chignolin[1][60].astype(np.float64)
    full, _ = openmm_forces(system, positions, "Reference")
    half, _ = openmm_forces(system, positions, "Reference", weight=0.5)
    neg, _ = openmm_forces(system, positions, "Reference", weight=-2.0)
    off, _ = openmm_forces(system, positions, "Reference", weight=0.0)
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(neg, -2.0 * full, rtol=1e-6, atol=1e-9)
    assert np.all(off == 0.0)


def test_xml_round_trip_gives_same_forces(built, chignolin, tmp_path):
    _, system, _ = built
    positions = chignolin[1][120].astype(np.float64)
    before, _ = openmm_forces(system, positions, "CPU")
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(system))
    copy = openmm.XmlSerializer.deserialize(xml.read_text())
    after, _ = openmm_forces(copy, positions, "CPU")
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-9)
    halved, _ = openmm_forces(copy, positions, "CPU", weight=0.5)  # λ survives as a global parameter
    np.testing.assert_allclose(halved, 0.5 * before, rtol=1e-6, atol=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_exported_file_reloads_with_same_forces(built, chignolin):
    module, _, path = built
    positions = torch.tensor(chignolin[1][30], dtype=torch.float64)
    loaded = torch.jit.load(str(path))
    energy, forces = loaded(positions, torch.tensor(1.0, dtype=torch.float64))
    np.testing.assert_allclose(forces.numpy(), module.forces(positions), rtol=1e-5, atol=1e-6)
    assert float(energy) == 0.0


def test_closed_form_is_translation_force_plus_torque():
    gen = torch.Generator().manual_seed(3)
    ca = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    n = ca + 0.15 * torch.randn(5, 3, generator=gen, dtype=torch.float64)
    c = ca + 0.15 * torch.randn(5, 3, generator=gen, dtype=torch.float64)
    rot_score = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    trans_score = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    kt = 2.5
    f_n, f_ca, f_c = frame_score_forces(n, ca, c, rot_score, trans_score, kt)
    rot, _ = frames_from_three_points(n, ca, c)
    torch.testing.assert_close(f_n + f_ca + f_c, kt * trans_score)  # net force: kT s_t
    torque = torch.linalg.cross(n - ca, f_n, dim=-1) + torch.linalg.cross(c - ca, f_c, dim=-1)
    torch.testing.assert_close(torque, kt * torch.einsum("nij,nj->ni", rot, rot_score))  # torque: kT R s_r


def test_forces_are_rotation_equivariant(chignolin, tmp_path):
    topology, xyz = chignolin
    net = random_network(5)
    q = random_rotations((), torch.Generator().manual_seed(9)).double().numpy()
    shift = np.array([1.0, -2.0, 0.5])

    def moved(x):
        return x.astype(np.float64) @ q.T + shift

    plain = StarMDForce(net, topology, xyz[:1], dt_ps=1000.0)
    save_model(tmp_path / "model", net)  # also checks building from a checkpoint folder
    rigid = StarMDForce(tmp_path / "model", topology, moved(xyz[:1]), dt_ps=1000 * u.picosecond)
    f0 = plain.forces(xyz[40])
    f1 = rigid.forces(moved(xyz[40]))
    assert np.abs(f0).max() > 1.0
    np.testing.assert_allclose(f1, f0 @ q.T, atol=2e-3 * np.abs(f0).max())
    assert plain.temperature_k == 300.0 and math.isclose(plain.kt, kt_kj_per_mol(300.0))


def test_residues_without_backbone_get_no_force(chignolin):
    topology, xyz = chignolin
    modeller = app.Modeller(topology, xyz[0] * u.nanometer)
    residues = list(modeller.topology.residues())
    gone = [a for a in modeller.topology.atoms() if (a.residue.index, a.name) in {(0, "N"), (5, "CA")}]
    modeller.delete(gone)
    keep = [a.index for a in topology.atoms() if a not in gone]
    module = StarMDForce(random_network(2), modeller.topology, xyz[:1, keep], dt_ps=100.0)
    assert module.num_residues == len(residues) - 1  # residue 0 lies before the first framed residue
    assert not bool(module.residue_mask[4]) and bool(module.residue_mask[3])
    forces = module.forces(xyz[20, keep])
    assert np.isfinite(forces).all()
    res_of = [a.residue.index for a in modeller.topology.atoms()]
    on_masked = np.array([r in (0, 5) for r in res_of])
    assert np.all(forces[on_masked] == 0.0)
    assert np.abs(forces[~on_masked]).max() > 1.0


def test_add_starmd_force_adds_switchable_force(chignolin, tmp_path):
    topology, xyz = chignolin
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(openmm.CMMotionRemover())
    index = add_starmd_force(system, topology, random_network(), xyz[:1], tmp_path / "f.pt", weight=0.0,
                             force_group=5)
    assert index == 1 and system.getForce(index).getForceGroup() == 5
    assert (tmp_path / "f.pt").is_file()
    off, _ = openmm_forces(system, xyz[10].astype(np.float64), "Reference")
    on, _ = openmm_forces(system, xyz[10].astype(np.float64), "Reference", weight=1.0)
    assert np.all(off == 0.0) and np.abs(on).max() > 1.0
    # the switch the relaxation uses: λ inside the block, 0 after it, no-op without the force
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(xyz[10].astype(np.float64))
    with starmd_force_on(context, 0.5):
        assert context.getParameter(WEIGHT_PARAMETER) == 0.5
        inside = context.getState(getForces=True, groups={5}).getForces(asNumpy=True)._value
    np.testing.assert_allclose(inside, 0.5 * on, rtol=1e-6, atol=1e-9)
    assert context.getParameter(WEIGHT_PARAMETER) == 0.0
    lone = openmm.System()
    lone.addParticle(1.0)
    bare = openmm.Context(lone, openmm.VerletIntegrator(0.001))
    with starmd_force_on(bare, 1.0):
        pass
    with pytest.raises(StarMDError, match="no StarMDForce"):
        set_starmd_weight(bare, 1.0)
    with pytest.raises(StarMDError, match="particles"):
        add_starmd_force(openmm.System(), topology, random_network(), xyz[:1], tmp_path / "g.pt")


def test_bad_inputs_give_one_line_errors(chignolin):
    topology, xyz = chignolin
    net = random_network()
    with pytest.raises(StarMDError, match="tau"):
        StarMDForce(net, topology, xyz[:1], tau=0.0)
    with pytest.raises(StarMDError, match="atoms"):
        StarMDForce(net, topology, xyz[:1, :50])
    with pytest.raises(StarMDError, match="dt_ps"):
        StarMDForce(net, topology, xyz[:1], dt_ps=-1.0)
    with pytest.raises(StarMDError, match="network or a checkpoint"):
        StarMDForce(object(), topology, xyz[:1])


def test_missing_openmmtorch_names_the_package(chignolin, tmp_path, monkeypatch):
    topology, xyz = chignolin
    monkeypatch.setitem(sys.modules, "openmmtorch", None)
    with pytest.raises(StarMDError, match="pip install acellera-openmmtorch-cpu"):
        add_starmd_force(openmm.System(), topology, random_network(), xyz[:1], tmp_path / "f.pt")
    assert not (tmp_path / "f.pt").exists()
    code = ("import sys; sys.modules['openmmtorch'] = None\n"
            "import openmm_starmd, openmm_starmd.forces, openmm_starmd.simulation, openmm_starmd.cli\n"
            "from openmm_starmd.forces import import_openmmtorch\n"
            "try:\n    import_openmmtorch()\nexcept openmm_starmd.StarMDError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "acellera-openmmtorch-cpu" in out.stdout and len(out.stdout.strip().splitlines()) == 1


def test_backbone_example_runs_and_saves_a_reloadable_system(tmp_path):
    path = ROOT / "examples" / "starmd_force_backbone.py"
    spec = importlib.util.spec_from_file_location("starmd_force_backbone", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    threads = torch.get_num_threads()
    try:
        state = example.main(["--steps", "20", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    positions = state.getPositions(asNumpy=True)._value
    assert positions.shape == (30, 3) and np.isfinite(positions).all()
    assert np.abs(positions - example.backbone_model(example.PDB)[1]).max() > 1e-3  # it moved
    system = openmm.XmlSerializer.deserialize((tmp_path / "system.xml").read_text())
    assert system.getNumForces() == 3 and (tmp_path / "starmd_force.pt").is_file()
    assert (tmp_path / "trajectory.dcd").stat().st_size > 0
