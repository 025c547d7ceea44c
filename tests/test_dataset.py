"""Trajectory windows: shapes, the Δt each item claims, reproducibility, rigid invariance, errors."""

import json
import shutil
from pathlib import Path

import mdtraj as md
import openmm.app as app
import pytest
import torch

from openmm_starmd.data import (
    UNKNOWN_RESIDUE,
    TrajectoryWindows,
    collate_windows,
    featurize_topology,
    find_atlas_folders,
)
from openmm_starmd.data.featurize import CHAIN_INDEX_GAP
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import protein, rigid

DATA = Path(__file__).parent / "data"


def _system(root: Path, name: str, source: str, stride_ps: float | None) -> Path:
    folder = root / name
    folder.mkdir()
    shutil.copy(DATA / f"{source}.pdb", folder / f"{name}.pdb")
    shutil.copy(DATA / f"{source}_3ns.xtc", folder / f"{name}_R1.xtc")
    if stride_ps is not None:
        (folder / f"{name}_R1.json").write_text(json.dumps({"stride_ps": stride_ps}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("atlas")
    # CLN: spacing from its JSON (10 ps); AMRV: no JSON, spacing from the constructor.
    return [_system(root, "CLN", "cln025", 10.0), _system(root, "AMRV", "amrv", None)]


@pytest.fixture(scope="module")
def reference() -> dict:
    """Frames and torsions of the whole test trajectories, computed directly."""
    out = {}
    for name, source in (("CLN", "cln025"), ("AMRV", "amrv")):
        traj = md.load(str(DATA / f"{source}_3ns.xtc"), top=str(DATA / f"{source}.pdb"))
        rot, trans, _ = protein.frames_from_positions(traj.xyz, traj.topology)
        angles, _ = protein.torsions(traj.xyz, traj.topology)
        out[name] = (rot, trans, angles)
    return out


def test_items_have_the_shapes_and_dt_they_claim(folders, reference):
    ds = TrajectoryWindows(folders, window=4, max_stride=30, frame_spacing_ps=20.0, seed=0, items_per_epoch=16)
    assert len(ds) == 16
    spacing = {"CLN": 10.0, "AMRV": 20.0}
    n_res = {"CLN": 10, "AMRV": 4}
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        name, K, N = item["name"], 4, n_res[item["name"]]
        seen.add(name)
        assert item["rotations"].shape == (K, N, 3, 3) and item["rotations"].dtype == torch.float32
        assert item["translations"].shape == (K, N, 3) and item["torsions"].shape == (K, N, 7)
        assert item["torsion_mask"].shape == (N, 7) and item["torsion_mask"].dtype == torch.bool
        for key in ("residue_type", "residue_index", "chain_break", "residue_mask"):
            assert item[key].shape == (N,)
        assert item["residue_mask"].all() and item["chain_break"][0] and not item["chain_break"][1:].any()
        stride, start = int(item["stride"]), int(item["start_frame"])
        assert 1 <= stride <= 30 and start + 3 * stride < 300
        assert item["dt_ps"].dtype == torch.float32 and item["dt_ps"].ndim == 0
        assert float(item["dt_ps"]) == stride * spacing[name]
        # The content really is frames start, start + s, ..., centred on the first frame's mean CA.
        rot, trans, angles = reference[name]
        frames = torch.arange(start, start + 3 * stride + 1, stride)
        centre = trans[start].mean(0)
        assert torch.allclose(item["translations"], trans[frames] - centre, atol=1e-5)
        assert torch.allclose(item["rotations"], rot[frames], atol=2e-6)
        assert torch.allclose(item["torsions"], angles[frames], atol=1e-6)
    assert seen == {"CLN", "AMRV"}


def test_stride_is_log_uniform_and_dt_range(folders):
    ds = TrajectoryWindows(folders[:1], window=4, max_stride=30, seed=1, items_per_epoch=400)
    strides = torch.tensor([int(ds[i]["stride"]) for i in range(len(ds))], dtype=torch.float64)
    assert strides.min() >= 1 and strides.max() <= 30
    # Log-uniform on [1, 31): P(s <= 5) = ln 6 / ln 31 = 0.52 (uniform would give 0.17).
    assert 0.42 < float((strides <= 5).double().mean()) < 0.62
    by_dt = TrajectoryWindows(folders[:1], window=4, dt_range_ps=(50.0, 200.0), seed=2, items_per_epoch=40)
    dts = [float(by_dt[i]["dt_ps"]) for i in range(len(by_dt))]
    assert min(dts) >= 50.0 and max(dts) <= 200.0 and all(dt % 10.0 == 0 for dt in dts)
    assert len(set(dts)) > 5


def test_items_are_reproducible_from_the_seed(folders):
    a = TrajectoryWindows(folders, window=4, max_stride=20, random_rigid=True, seed=5, items_per_epoch=6)
    b = TrajectoryWindows(folders, window=4, max_stride=20, random_rigid=True, seed=5, items_per_epoch=6)
    for i in (0, 3, 5):
        assert torch.equal(a[i]["rotations"], b[i]["rotations"])
        assert torch.equal(a[i]["translations"], b[i]["translations"])
    assert not torch.equal(a[0]["rotations"], a[1]["rotations"])
    before = a[2]["rotations"]
    a.set_epoch(1)
    assert not torch.equal(before, a[2]["rotations"])
    c = TrajectoryWindows(folders, window=4, max_stride=20, random_rigid=True, seed=6, items_per_epoch=6)
    assert not torch.equal(before, c[2]["rotations"])


def _relative(item: dict) -> torch.Tensor:
    """Each residue's frame at k expressed in its own frame at k-1: [K-1, N, 3, 3] and [K-1, N, 3]."""
    rot, trans = item["rotations"], item["translations"]
    inv_rot, inv_trans = rigid.invert(rot[:-1], trans[:-1])
    return rigid.compose(inv_rot, inv_trans, rot[1:], trans[1:])


def test_rigid_motion_leaves_frame_relative_features_unchanged(folders):
    plain = TrajectoryWindows(folders, window=4, max_stride=20, seed=9, items_per_epoch=5)
    moved = TrajectoryWindows(folders, window=4, max_stride=20, random_rigid=True, seed=9, items_per_epoch=5)
    for i in range(len(plain)):
        a, b = plain[i], moved[i]
        assert int(a["start_frame"]) == int(b["start_frame"]) and int(a["stride"]) == int(b["stride"])
        assert not torch.allclose(a["rotations"], b["rotations"], atol=1e-2)  # really rotated
        (ra, ta), (rb, tb) = _relative(a), _relative(b)
        assert torch.allclose(ra, rb, atol=1e-5) and torch.allclose(ta, tb, atol=1e-5)
        assert torch.equal(a["torsions"], b["torsions"])
        spin = b["rotations"][0, 0] @ a["rotations"][0, 0].T
        assert torch.allclose(b["translations"], a["translations"] @ spin.T, atol=1e-5)


def test_rigid_motion_of_positions_leaves_features_unchanged():
    traj = md.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))[:20]
    g = torch.Generator().manual_seed(4)
    spin = rigid.random_rotations((), g)
    shift = torch.randn(3, generator=g)
    xyz = torch.from_numpy(traj.xyz)
    moved = rigid.apply(spin, shift, xyz)
    rot_a, trans_a, _ = protein.frames_from_positions(xyz, traj.topology)
    rot_b, trans_b, _ = protein.frames_from_positions(moved, traj.topology)
    assert torch.allclose(rot_b, spin @ rot_a, atol=1e-5)
    rel_a = _relative({"rotations": rot_a, "translations": trans_a})
    rel_b = _relative({"rotations": rot_b, "translations": trans_b})
    assert torch.allclose(rel_a[0], rel_b[0], atol=1e-5) and torch.allclose(rel_a[1], rel_b[1], atol=1e-5)
    angles_a, angles_b = protein.torsions(xyz, traj.topology)[0], protein.torsions(moved, traj.topology)[0]
    assert torch.allclose(angles_a, angles_b, atol=1e-4)


def test_crop_is_contiguous_and_centred(folders):
    ds = TrajectoryWindows(folders[:1], window=4, max_residues=4, seed=3, items_per_epoch=10)
    starts = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["translations"].shape == (4, 4, 3)
        index = item["residue_index"]
        assert torch.equal(index, index[0] + torch.arange(4))
        starts.add(int(index[0]))
        assert item["chain_break"][0] and not item["chain_break"][1:].any()
        assert item["translations"][0].mean(0).abs().max() < 1e-5
    assert len(starts) > 1


def test_collate_pads_residues(folders):
    ds = TrajectoryWindows(folders, window=4, max_stride=10, seed=0, items_per_epoch=20)
    items = [ds[i] for i in range(len(ds))]
    items = [next(x for x in items if x["name"] == "CLN"), next(x for x in items if x["name"] == "AMRV")]
    batch = collate_windows(items)
    assert batch["name"] == ["CLN", "AMRV"]
    assert batch["rotations"].shape == (2, 4, 10, 3, 3) and batch["translations"].shape == (2, 4, 10, 3)
    assert batch["torsions"].shape == (2, 4, 10, 7) and batch["torsion_mask"].shape == (2, 10, 7)
    assert batch["dt_ps"].shape == (2,) and batch["residue_type"].shape == (2, 10)
    assert batch["residue_mask"][0].all() and batch["residue_mask"][1].tolist() == [True] * 4 + [False] * 6
    assert torch.equal(batch["rotations"][1, :, 4:], torch.eye(3).expand(4, 6, 3, 3))
    assert (batch["translations"][1, :, 4:] == 0).all() and not batch["torsion_mask"][1, 4:].any()
    assert (batch["residue_type"][1, 4:] == UNKNOWN_RESIDUE).all()
    assert torch.equal(batch["translations"][1, :, :4], items[1]["translations"])


def test_lazy_reading_keeps_bounded_state(folders):
    ds = TrajectoryWindows(folders, window=4, seed=0, items_per_epoch=10, max_cached_systems=1, max_open_files=1)
    assert len(ds._tables) == 0 and len(ds.reader._handles) == 0  # nothing read until an item needs it
    names = set()
    for i in range(len(ds)):
        names.add(ds[i]["name"])
        assert len(ds._tables) == 1 and len(ds.reader._handles) == 1
    assert names == {"CLN", "AMRV"}  # both systems were read through the one slot


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "BAD"
    bad.mkdir()
    shutil.copy(DATA / "amrv.pdb", bad / "BAD.pdb")
    shutil.copy(DATA / "cln025_3ns.xtc", bad / "BAD_R1.xtc")
    with pytest.raises(StarMDError, match=r"BAD_R1\.xtc has 166 atoms but .*BAD\.pdb has 70"):
        TrajectoryWindows([bad])
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    with pytest.raises(StarMDError, match=r"EMPTY\.pdb"):
        TrajectoryWindows([empty])
    shutil.copy(DATA / "amrv.pdb", empty / "EMPTY.pdb")
    with pytest.raises(StarMDError, match=r"EMPTY_R\*\.xtc"):
        TrajectoryWindows([empty])
    short = _system(tmp_path, "SHORT", "amrv", 10.0)
    with pytest.raises(StarMDError, match=r"SHORT_R1\.xtc"):
        TrajectoryWindows([short], window=400)
    assert find_atlas_folders(tmp_path) == [bad, empty, short]


def test_featurize_openmm_and_mdtraj_agree():
    pdb = app.PDBFile(str(DATA / "cln025.pdb"))
    a = featurize_topology(pdb.topology)
    b = featurize_topology(md.load_topology(str(DATA / "cln025.pdb")))
    for key, value in a.as_dict().items():
        assert torch.equal(value, b.as_dict()[key]), key
    assert a.sequence == "YYDPETGTWY" and a.residue_type.dtype == torch.long
    top = app.Topology()
    chain_a, chain_b = top.addChain(), top.addChain()
    for chain, names in ((chain_a, [("HIE", "1"), ("ACE", "2"), ("ALA", "5")]), (chain_b, [("HOH", "1")])):
        for resname, rid in names:
            top.addResidue(resname, chain, id=rid)
    f = featurize_topology(top)
    assert f.residue_type.tolist() == [8, UNKNOWN_RESIDUE, 0, UNKNOWN_RESIDUE]
    # A new chain starts CHAIN_INDEX_GAP further on: the network tells chains apart by the residue index.
    assert f.residue_index.tolist() == [0, 1, 4, 4 + CHAIN_INDEX_GAP] and f.chain_index.tolist() == [0, 0, 0, 1]
    assert f.chain_break.tolist() == [True, False, True, True] and not f.residue_mask.any()
