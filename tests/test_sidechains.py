"""Side chains from χ: geometry of set_chi, the rollout's χ draw, and the hybrid/ensemble/rollout mapping."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import mdtraj
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
import torch
from devicecheck import DeviceCheck

from openmm_starmd import StarMDEnsemble, StarMDSimulation
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.forcefields import build_system
from openmm_starmd.frames.protein import frames_from_positions, torsions
from openmm_starmd.frames.rigid import interpolate
from openmm_starmd.model.checkpoint import save_model
from openmm_starmd.model.chi import chi_bin
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.rollout import Rollout
from openmm_starmd.simulation.guards import TORN_TARGET, Guard, GuardSettings
from openmm_starmd.simulation.proposer import PerturbationProposer, StarMDProposer
from openmm_starmd.simulation.relax import RelaxSettings
from openmm_starmd.simulation.sidechains import SideChains

DATA = Path(__file__).parent / "data"
BINS = 12
CHI1_BIN = 0  # the bin the hand-set head always draws for χ1: [-π, -5π/6), trans; no χ1 of the start is there


def _wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


@pytest.fixture(scope="module")
def chignolin():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    return pdb.topology, np.asarray(pdb.positions.value_in_unit(u.nanometer), dtype=np.float64)


def _bonds_and_angles(topology: app.Topology, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds()])
    neighbours: dict[int, set[int]] = {}
    for a, b in bonds:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triples = np.array([(i, j, k) for j, ns in neighbours.items() for i in ns for k in ns if i < k])
    lengths = np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)
    u1, u2 = x[triples[:, 0]] - x[triples[:, 1]], x[triples[:, 2]] - x[triples[:, 1]]
    cos = (u1 * u2).sum(1) / np.linalg.norm(u1, axis=1) / np.linalg.norm(u2, axis=1)
    return lengths, np.arccos(np.clip(cos, -1, 1))


def test_set_chi_reaches_the_target_and_keeps_bonds_and_angles(chignolin):
    topology, x = chignolin
    sc = SideChains(topology)
    names = [r.name for r in topology.residues()]
    # chignolin GYDPETGTWG as CLN025 (YYDPETGTWY): Pro and Gly have nothing to turn, Glu has χ1–χ3
    assert not sc.mask[names.index("PRO")].any() and not sc.mask[names.index("GLY")].any()
    assert sc.mask[names.index("GLU")].tolist() == [True, True, True, False]
    chi = (torch.rand(sc.num_residues, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1) * math.pi
    y = sc.set_chi(x, chi)
    angles, _ = torsions(y, topology)
    mask = torch.as_tensor(sc.mask)
    before, _ = torsions(x, topology)
    assert float(_wrap(before[0, :, 3:] - chi)[mask].abs().min()) > 1e-2  # the targets were not there already
    assert float(_wrap(angles[0, :, 3:] - chi)[mask].abs().max()) < 1e-4
    moving = {a for i in range(sc.num_residues) for k in range(4) for a in sc.moving_atoms(i, k)}
    still = np.setdiff1d(np.arange(len(x)), sorted(moving))
    assert np.array_equal(y[still], x[still])  # atoms outside the moving sets do not move at all
    assert np.abs(y[sorted(moving)] - x[sorted(moving)]).max() > 0.1
    lengths0, angles0 = _bonds_and_angles(topology, x)
    lengths1, angles1 = _bonds_and_angles(topology, y)
    assert np.abs(lengths1 - lengths0).max() < 1e-9
    assert np.abs(angles1 - angles0).max() < 1e-9
    # φ, ψ, ω are untouched; a mask limits what is set
    assert float((angles[0, :, :3] - before[0, :, :3]).abs().max()) < 1e-5
    only_chi1 = np.zeros((sc.num_residues, 4), dtype=bool)
    only_chi1[:, 0] = True
    z, _ = torsions(sc.set_chi(x, chi, only_chi1), topology)
    assert float(_wrap(z[0, :, 3] - chi[:, 0])[mask[:, 0]].abs().max()) < 1e-4
    # χ2 keeps its value when only χ1 turns (its atoms turn as one body with χ1)
    assert float(_wrap(z[0, :, 4] - before[0, :, 4])[mask[:, 1]].abs().max()) < 1e-4


def test_place_keeps_a_draw_only_where_it_adds_no_overlap(chignolin):
    topology, x = chignolin
    sc = SideChains(topology)
    md_top = mdtraj.Topology.from_openmm(topology)
    before, _ = torsions(x, topology)
    chi = before[0, :, 3:].clone()
    chi[8, 0] = math.radians(-60.0)  # Trp9's ring turned into Tyr2 and the turn: 20 heavy-atom overlaps
    chi[5, 0] = math.radians(60.0)  # Thr6 turned where nothing is in the way
    clashes = frame_validity(mdtraj.Trajectory(sc.set_chi(x, chi)[None].astype(np.float32), md_top)).heavy_clashes
    assert clashes[0] >= 10
    y = sc.place(x, chi)
    assert frame_validity(mdtraj.Trajectory(y[None].astype(np.float32), md_top)).heavy_clashes[0] == 0
    trp = [a.index for a in list(topology.residues())[8].atoms()]
    assert np.array_equal(y[trp], x[trp])  # Trp9 keeps its rigidly moved side chain
    angles, _ = torsions(y, topology)
    assert abs(float(_wrap(angles[0, 5, 3] - chi[5, 0]))) < 1e-4  # Thr6 takes its draw


def _trp9_draws(topology: app.Topology, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """χ1–χ4 ``[N, 4]`` of ``x`` twice, with Trp9 turned into Tyr2 (19 overlaps) in the first and clear of
    everything in the second."""
    before, _ = torsions(x, topology)
    into, clear = before[0, :, 3:].clone(), before[0, :, 3:].clone()
    into[8, :2] = torch.tensor([math.radians(-60.0), math.radians(90.0)])
    clear[8, :2] = torch.tensor([math.radians(180.0), math.radians(-90.0)])
    return into, clear


def test_place_turns_an_overlapping_side_chain_to_its_next_draw_and_keeps_the_others_first(chignolin):
    topology, x = chignolin
    sc = SideChains(topology)
    md_top = mdtraj.Topology.from_openmm(topology)
    first, second = _trp9_draws(topology, x)
    first[5, 0], second[5, 0] = math.radians(60.0), math.radians(180.0)  # Thr6 fits either way
    y = sc.place(x, torch.stack([first, second]))
    assert frame_validity(mdtraj.Trajectory(y[None].astype(np.float32), md_top)).heavy_clashes[0] == 0
    angles, _ = torsions(y, topology)
    assert float(_wrap(angles[0, 8, 3:5] - second[8, :2]).abs().max()) < 1e-4  # Trp9 took its second draw
    assert abs(float(_wrap(angles[0, 5, 3] - first[5, 0]))) < 1e-4  # Thr6 kept its first
    # one draw alone: Trp9 cannot move and keeps its rigidly moved side chain
    trp = [a.index for a in list(topology.residues())[8].atoms()]
    assert np.array_equal(sc.place(x, first)[trp], x[trp])


def test_fallback_draws_only_reach_side_chains_that_overlap_even_when_rigid(chignolin):
    topology, x = chignolin
    sc = SideChains(topology)
    md_top = mdtraj.Topology.from_openmm(topology)
    into, clear = _trp9_draws(topology, x)
    trp = [a.index for a in list(topology.residues())[8].atoms()]
    # the rigid side chain fits: the draw that overlaps is undone and the fallback draw is never tried
    y = sc.place(x, torch.stack([into, clear]), draws=1)
    assert np.array_equal(y[trp], x[trp])
    assert not np.array_equal(sc.place(x, torch.stack([into, clear]))[trp], x[trp])  # as a second draw it is taken
    # the rigidly moved side chain overlaps too: the fallback draw is taken
    jammed = sc.set_chi(x, into)
    assert frame_validity(mdtraj.Trajectory(jammed[None].astype(np.float32), md_top)).heavy_clashes[0] >= 10
    y = sc.place(jammed, torch.stack([into, clear]), draws=1)
    assert frame_validity(mdtraj.Trajectory(y[None].astype(np.float32), md_top)).heavy_clashes[0] == 0
    angles, _ = torsions(y, topology)
    assert float(_wrap(angles[0, 8, 3:5] - clear[8, :2]).abs().max()) < 1e-4
    # a fallback draw that overlaps as well is not kept: the residue stays as the first draws left it
    y = sc.place(jammed, torch.stack([into, into]), draws=1)
    assert np.allclose(y, jammed, atol=1e-9, rtol=0)


def _dihedral(q: np.ndarray) -> torch.Tensor:
    """Dihedral (rad) of four points ``[4, 3]``."""
    b0, b1, b2 = q[0] - q[1], q[2] - q[1], q[3] - q[2]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - (b0 @ b1) * b1, b2 - (b2 @ b1) * b1
    return torch.tensor(math.atan2(np.cross(b1, v) @ w, v @ w))


def _turn(x: np.ndarray, axis_from: int, axis_to: int, atoms: list[int], angle: float) -> np.ndarray:
    """Rodrigues rotation of ``atoms`` about the axis_from → axis_to bond (independent of the package)."""
    k = (x[axis_to] - x[axis_from]) / np.linalg.norm(x[axis_to] - x[axis_from])
    v = x[atoms] - x[axis_to]
    y = x.copy()
    y[atoms] = (x[axis_to] + v * math.cos(angle) + np.cross(k, v) * math.sin(angle)
                + np.outer(v @ k, k) * (1 - math.cos(angle)))
    return y


def test_an_overlapping_c_terminal_carboxylate_turns_about_ca_c_to_the_nearest_clear_angle(chignolin):
    topology, x = chignolin
    sc = SideChains(topology)
    md_top = mdtraj.Topology.from_openmm(topology)
    last = list(topology.residues())[-1]
    atom = {a.name: a.index for a in last.atoms()}
    carboxylate = [atom["O"], atom["OXT"]]
    assert np.array_equal(sc.place(x, None), x)  # nothing overlaps: nothing moves
    # a raw proposal of the hybrid: Tyr1's N 0.18 nm from Tyr10's OXT, the only overlap
    raw = app.PDBFile(str(DATA / "cln025_raw_cterm_overlap.pdb"))
    p = np.asarray(raw.positions.value_in_unit(u.nanometer), dtype=np.float64)

    def clashes(y: np.ndarray) -> int:
        return int(frame_validity(mdtraj.Trajectory(y[None].astype(np.float32), md_top)).heavy_clashes[0])

    assert clashes(p) == 1 and np.linalg.norm(p[0] - p[atom["OXT"]]) < 0.2
    y = sc.place(p, None)
    assert clashes(y) == 0
    others = np.setdiff1d(np.arange(len(p)), carboxylate)
    assert np.array_equal(y[others], p[others])
    for a in carboxylate:  # a turn about CA–C: distances to CA and C are kept
        for b in (atom["CA"], atom["C"]):
            assert abs(np.linalg.norm(y[a] - y[b]) - np.linalg.norm(p[a] - p[b])) < 1e-9
    quad = [atom["N"], atom["CA"], atom["C"], atom["OXT"]]
    turned = float(_wrap(_dihedral(y[quad]) - _dihedral(p[quad])))
    assert 1e-3 < abs(turned) <= math.pi + 1e-6
    steps = round(abs(math.degrees(turned)) / 15)
    assert abs(abs(math.degrees(turned)) - 15 * steps) < 1e-3  # one of the 15° steps
    for k in range(1, steps):  # every nearer step still overlaps
        for sign in (1, -1):
            assert clashes(_turn(p, atom["CA"], atom["C"], carboxylate, sign * math.radians(15 * k))) > 0


def _chi_net(bias_bin: int | None = CHI1_BIN) -> StarMDNetwork:
    torch.manual_seed(0)
    net = StarMDNetwork(preset("tiny", chi_head=True, chi_bins=BINS))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if bias_bin is not None:  # χ1 always falls in bias_bin; χ2–χ4 stay spread by the random weights
            net.chi_head.bias.view(4, BINS)[0, bias_bin] = 50.0
    return net.eval()


@pytest.fixture(scope="module")
def frames():
    traj = mdtraj.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))[::25]
    rot, trans, _ = frames_from_positions(traj, traj.topology)
    return rot, trans, featurize_topology(traj.topology)


def test_fallback_draws_follow_the_draws_and_reach_bins_the_head_rules_out(frames):
    rot, trans, feats = frames
    net = _chi_net()  # χ1 always in CHI1_BIN at temperature 1 (logit +50)
    net.config = net.config.replace(chi_draws=4, chi_fallback_draws=64, chi_fallback_temperature=25.0)
    ro = Rollout(net, feats, num_steps=3)
    ro.push(rot[0], trans[0])
    ro.sample(100.0, torch.Generator().manual_seed(5))
    N = feats.residue_type.shape[0]
    assert ro.last_chi.shape == (4 + 64, N, 4)
    first = chi_bin(ro.last_chi[:4, :, 0], BINS)
    assert torch.all(first == CHI1_BIN)
    # at T = 25 the +50 logit is worth e² ≈ 7.4 against ~1 for each of the 11 other bins: ~60 % of draws elsewhere
    elsewhere = (chi_bin(ro.last_chi[4:, :, 0], BINS) != CHI1_BIN).float().mean().item()
    assert 0.4 < elsewhere < 0.8


def test_chi_draw_follows_the_frames_and_replica_k_draws_what_its_single_run_draws(frames):
    rot, trans, feats = frames
    net = _chi_net(bias_bin=None)
    plain = StarMDNetwork(preset("tiny"))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("chi_head")})
    plain.eval()
    # the χ draw comes after the frame noise: the frames equal those of the same model without a χ head
    a, b = Rollout(net, feats, num_steps=3), Rollout(plain, feats, num_steps=3)
    for ro in (a, b):
        ro.push(rot[0], trans[0])
    fa, fb = a.sample(100.0, torch.Generator().manual_seed(5)), b.sample(100.0, torch.Generator().manual_seed(5))
    assert torch.equal(fa[0], fb[0]) and torch.equal(fa[1], fb[1])
    assert b.last_chi is None
    assert a.last_chi.shape == (net.config.chi_draws, feats.residue_type.shape[0], 4) and net.config.chi_draws > 1
    assert not torch.equal(a.last_chi[0], a.last_chi[1])  # independent draws, not copies
    # batched replicas draw each from its own generator, as single runs seeded the same
    seeds = [3, 4, 5]
    batched = Rollout(net, feats, num_steps=3, replicas=3)
    batched.push(rot[:3], trans[:3])
    batched.sample(100.0, [torch.Generator().manual_seed(s) for s in seeds])
    for k, s in enumerate(seeds):
        single = Rollout(net, feats, num_steps=3)
        single.push(rot[k], trans[k])
        single.sample(100.0, torch.Generator().manual_seed(s))
        assert torch.equal(chi_bin(batched.last_chi[k], BINS), chi_bin(single.last_chi, BINS))
        assert torch.allclose(batched.last_chi[k], single.last_chi, atol=1e-5)
    assert not torch.allclose(batched.last_chi[0], batched.last_chi[1])


@pytest.fixture(scope="module")
def system_setup():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    system, topology, positions = build_system(pdb.topology, pdb.positions, "implicit-fast")
    return topology, system, positions


@pytest.fixture
def placed(monkeypatch):
    """Every side-chain placement as (rigidly moved input, output) pairs."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    place = SideChains.place

    def recording(self, positions, chi, *args, **kwargs):
        seen.append((np.array(positions, dtype=np.float64), place(self, positions, chi, *args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(SideChains, "place", recording)
    return seen


@pytest.fixture
def mapped(monkeypatch, placed):
    """Every proposal passes the frame guard; the mapped structure whose raw validity is scored is recorded,
    then refused before relaxation (the raw mapping is what is tested; no OpenMM work)."""
    seen: list[np.ndarray] = []
    raw_failure = Guard.raw_failure
    monkeypatch.setattr(Guard, "check_proposal", lambda self, rot, trans: None)
    monkeypatch.setattr(Guard, "raw_failure", lambda self, positions: seen.append(positions.copy()) or
                        raw_failure(self, positions))
    monkeypatch.setattr(Guard, "check_target", lambda self, positions: TORN_TARGET)
    return seen


ONE_TRY = GuardSettings(max_resamples=0, max_halvings=0)


def _chi1_bins(positions: np.ndarray, topology: app.Topology) -> tuple[torch.Tensor, torch.Tensor]:
    angles, _ = torsions(positions, topology)
    settable = torch.as_tensor(SideChains(topology).mask[:, 0])
    return chi_bin(angles[0, :, 3], BINS)[settable], angles[0, :, 3][settable]


def _took_the_draw(rigid: np.ndarray, out: np.ndarray, topology: app.Topology) -> int:
    """Residues whose χ1 is in the forced bin; every other settable residue kept its rigid side chain
    (the draw would have overlapped a neighbour: SideChains.place)."""
    sc = SideChains(topology)
    settable = np.flatnonzero(sc.mask[:, 0])
    bins, _ = _chi1_bins(out, topology)
    for i, b in zip(settable, bins.tolist(), strict=True):
        atoms = sc.moving_atoms(int(i), 0)  # the side chain (a C-terminal carboxylate may turn on its own)
        assert b == CHI1_BIN or np.array_equal(out[atoms], rigid[atoms])
    return int((bins == CHI1_BIN).sum())


def test_hybrid_and_ensemble_place_side_chains_from_the_drawn_chi(system_setup, mapped, placed):
    topology, system, positions = system_setup
    start = np.asarray(positions.value_in_unit(u.nanometer))
    net = _chi_net()
    sim = StarMDSimulation(topology, system, net, jump=100.0, guards=ONE_TRY, platform="Reference", seed=2)
    assert sim.proposer.draws_chi and sim.side_chains is not None
    sim.context.setPositions(positions)
    with pytest.raises(Exception, match="failed the guards"):
        sim.step(1)
    assert len(mapped) == len(placed) == 1 and sim.validity()["raw_proposals"] == 1
    assert np.array_equal(mapped[0], placed[0][1])  # raw validity scores the structure with χ placed
    start_bins, _ = _chi1_bins(start, topology)
    assert _took_the_draw(*placed[0], topology) >= 3 > int((start_bins == CHI1_BIN).sum())
    single = mapped.pop()
    # replica k of an ensemble (batched draw, seed + k) maps what the single run with that seed mapped
    host = ("AtomMap.__init__", "AtomMap.frames", "AtomMap.move_atoms", "AtomMap.move_atoms.<locals>.<genexpr>",
            "backbone_atom_indices", "chain_breaks", "torsion_atom_indices", "IGSO3.__init__")
    with DeviceCheck("cpu", allow=host):  # the χ path makes no tensor without an explicit device
        ens = StarMDEnsemble(topology, system, net, replicas=2, jump=100.0, guards=ONE_TRY, platform="Reference",
                             seed=1)
        for member in ens.simulations:
            member.context.setPositions(positions)
        with pytest.raises(Exception, match="every replica failed"):
            ens.step(1)
    assert len(mapped) == 2
    assert np.abs(mapped[1] - single).max() < 1e-4
    assert np.abs(mapped[0] - mapped[1]).max() > 1e-2
    assert all(_took_the_draw(*pair, topology) >= 3 for pair in placed[1:])


def test_proposers_without_a_chi_head_keep_side_chains_rigid(system_setup):
    topology, system, _ = system_setup
    perturb = StarMDSimulation(topology, system, PerturbationProposer(), jump=100.0, guards=ONE_TRY,
                               platform="Reference", seed=0)
    assert perturb.side_chains is None and perturb.proposer.proposal_chi() is None
    plain = StarMDSimulation(topology, system, StarMDNetwork(preset("tiny")), jump=100.0, guards=ONE_TRY,
                             platform="Reference", seed=0)
    assert not plain.proposer.draws_chi and plain.side_chains is None


def test_starmd_rollout_all_atoms_places_side_chains_and_says_so(tmp_path, placed):
    from openmm_starmd.generate import run_rollout

    folder = save_model(tmp_path / "chi_model", _chi_net())
    out = run_rollout(DATA / "cln025.pdb", tmp_path / "run", time_ps=200.0, jump_ps=100.0, model=folder,
                      atoms="all", device="cpu", progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["side_chains"] == "chi head"
    assert record["settings"]["model_chi_draws"]["draws"] == 8
    assert record["torch_threads"] == torch.get_num_threads()
    traj = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 2
    top = app.PDBFile(str(out / "topology.pdb")).topology
    assert len(placed) == 2
    for frame, (rigid, written) in zip(traj.xyz, placed, strict=True):
        assert np.abs(frame - written).max() < 1e-3  # XTC keeps 0.001 nm
        assert _took_the_draw(rigid, written, top) >= 1  # untrained frames crowd the chain: most draws overlap


def test_simulate_records_side_chains_from_the_chi_head(tmp_path, mapped, placed):
    from openmm_starmd.simulation.run import run_simulation

    net = _chi_net()
    net.config = net.config.replace(max_step_ps=50.0)  # each 100 ps jump drawn in two model steps
    folder = save_model(tmp_path / "chi_model", net)
    out = tmp_path / "run"
    with pytest.raises(Exception, match="failed the guards"):  # every target is refused (fixture): no relaxation
        run_simulation(DATA / "cln025.pdb", out, time_ps=100.0, jump_ps=100.0, model=str(folder), seed=0,
                       platform="Reference", forcefield="implicit-fast", progress=False)
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["side_chains"] == "chi head" and record["status"] == "failed"
    assert record["settings"]["model_max_step_ps"] == 50.0
    assert record["settings"]["model_chi_draws"] == {"draws": 8, "fallback_draws": 0, "fallback_temperature": 5.0}
    assert record["torch_threads"] == torch.get_num_threads()  # what the seed reproduces with
    assert len(mapped) == record["validity"]["raw_proposals"] > 0
    assert np.array_equal(mapped[0], placed[0][1])
    assert _took_the_draw(*placed[0], app.PDBFile(str(out / "topology.pdb")).topology) >= 1


class _Damped(StarMDProposer):
    """Untrained frames squashed to small moves so that cycles are accepted (as in test_simulation_starmd);
    the χ draw is the model's own."""

    def push(self, rotations, translations):
        self.last = (rotations.float(), translations.float())
        super().push(rotations, translations)

    def propose(self, dt_ps, generator):
        rot, trans = super().propose(dt_ps, generator)
        last_rot, last_trans = self.last
        return interpolate(last_rot, rot, 0.01), last_trans + 0.005 * torch.tanh(trans - last_trans)


def test_chi_runs_resume_exactly_and_turn_side_chains(system_setup):
    topology, system, positions = system_setup
    net = _chi_net(bias_bin=None)
    quick = RelaxSettings(time_ps=0.04, minimize_iterations=5, ramp_stages=2)

    def make(seed):
        sim = StarMDSimulation(topology, system, _Damped(net, topology, num_steps=2), jump=1000.0, relax=quick,
                               platform="Reference", seed=seed)
        sim.context.setPositions(positions)
        return sim

    straight = make(4)
    straight.step(3)
    assert sum(straight.rejections.values()) == 0
    first = make(4)
    first.step(1)
    buffer = io.BytesIO()
    first.saveCheckpoint(buffer)
    buffer.seek(0)
    resumed = make(11)
    resumed.loadCheckpoint(buffer)
    resumed.proposer.last = first.proposer.last  # the damping wrapper's own memory (not rollout state)
    resumed.step(2)
    a = straight.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    b = resumed.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    start, _ = torsions(np.asarray(positions.value_in_unit(u.nanometer)), topology)
    end, _ = torsions(np.asarray(a), topology)
    settable = torch.as_tensor(straight.side_chains.mask[:, 0])
    # frames barely move (damped), yet side chains changed rotamer: the χ draws reached the structure
    assert int((_wrap(end[0, :, 3] - start[0, :, 3]).abs() > math.radians(60))[settable].sum()) >= 2
