"""The structural-violation penalty: zero on MD, the stretch and overlap it should see, and its place in training."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from openmm_starmd.cli import main
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.train.objective import diffusion_loss
from openmm_starmd.train.violations import CB_MIN_NM, HEAVY_MIN_NM, LINK_MAX_NM, backbone_violation, ideal_cb

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def traj() -> md.Trajectory:
    """3 ns of chignolin (CLN025, YYDPETGTWY: Gly7 the only glycine) MD, every 100 ps."""
    return md.load(DATA / "cln025_3ns.xtc", top=DATA / "cln025.pdb")[::10]


@pytest.fixture(scope="module")
def chignolin(traj) -> torch.Tensor:
    """Backbones N, CA, C, O ``[T, 10, 4, 3]`` nm."""
    index = [[res.atom(name).index for name in ("N", "CA", "C", "O")] for res in traj.topology.residues
             if res.is_protein]
    return torch.tensor(traj.xyz[:, np.array(index)])


def flags(bb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, N = bb.shape[:2]
    return torch.ones(B, N, dtype=torch.bool), torch.zeros(B, N, dtype=torch.bool)


def has_cb(traj: md.Trajectory) -> torch.Tensor:
    return torch.tensor([res.name != "GLY" for res in traj.topology.residues if res.is_protein])


def test_md_frames_are_not_penalised(traj, chignolin):
    cb = has_cb(traj)[None].expand(len(chignolin), -1)
    for with_cb, neighbours in ((None, False), (cb, False), (cb, True)):
        v = backbone_violation(chignolin, *flags(chignolin), with_cb, neighbours)
        assert v.shape == (len(chignolin),)
        assert float(v.max()) < 1e-5  # nm²: MD grazes the flat bottoms at most
        moved = chignolin + torch.tensor([1.0, -2.0, 0.5])  # a rigid shift changes no distance
        assert torch.allclose(backbone_violation(moved, *flags(moved), with_cb, neighbours), v, atol=1e-9)


def test_ideal_cb_is_where_md_has_it(traj, chignolin):
    residues = [res for res in traj.topology.residues if res.is_protein]
    keep = [i for i, res in enumerate(residues) if res.name != "GLY"]
    md_cb = torch.tensor(traj.xyz[:, [residues[i].atom("CB").index for i in keep]])
    error = (ideal_cb(chignolin)[:, keep] - md_cb).norm(dim=-1)
    assert float(error.mean()) < 0.02 and float(error.max()) < 0.06  # nm; CB–CA is 0.153


def test_a_cb_turned_into_a_distant_backbone_is_penalised_but_not_on_glycine(traj, chignolin):
    bb = chignolin[:1].clone()
    mask, brk = flags(bb)
    cb = has_cb(traj)[None]
    base = float(backbone_violation(bb, mask, brk, cb))
    # residue 10's backbone moved so that its CA sits 0.1 nm beyond residue 2's CB, along CA2→CB2
    ca2, cb2 = bb[0, 1, 1], ideal_cb(bb)[0, 1]
    bb[0, 9] += cb2 + 0.1 * (cb2 - ca2) / (cb2 - ca2).norm() - bb[0, 9, 1]
    with_cb = float(backbone_violation(bb, mask, brk, cb))
    assert with_cb > base + (CB_MIN_NM - 0.1) ** 2 / 10
    no_cb = cb.clone()
    no_cb[0, 1] = False  # residue 2 as a glycine: its CB is not there to overlap
    assert float(backbone_violation(bb, mask, brk, no_cb)) < with_cb - (CB_MIN_NM - 0.1) ** 2 / 10


def test_a_stretched_link_costs_its_squared_excess_unless_the_chain_is_broken_there(chignolin):
    bb = chignolin[:1].clone()
    ca = bb[0, :, 1]
    direction = (ca[5] - ca[4]) / (ca[5] - ca[4]).norm()
    link = float((ca[5] - ca[4]).norm())
    bb[0, 5:] += 0.1 * direction  # residues 6–10 pulled 0.1 nm away along the 5–6 link
    mask, brk = flags(bb)
    expected = (link + 0.1 - LINK_MAX_NM) ** 2 / 10
    assert float(backbone_violation(bb, mask, brk)) == pytest.approx(expected, rel=1e-3)
    brk[0, 5] = True
    assert float(backbone_violation(bb, mask, brk)) < 1e-5


def test_overlapping_backbones_are_penalised_unless_one_is_padding(chignolin):
    bb = chignolin[:1].clone()
    # residue 10 moved so that its CA sits 0.1 nm from residue 1's CA: deep overlap
    bb[0, 9] += bb[0, 0, 1] - bb[0, 9, 1] + torch.tensor([0.1, 0.0, 0.0])
    mask, brk = flags(bb)
    # the CA–CA pair alone costs (0.34 − 0.1)² / 10 and each other atom pair closer than HEAVY_MIN_NM more
    assert float(backbone_violation(bb, mask, brk)) > (0.24**2 + (HEAVY_MIN_NM - 0.15) ** 2) / 10
    mask[0, 9] = False
    brk[0, 9] = True
    assert float(backbone_violation(bb, mask, brk)) < 1e-5


def test_neighbouring_oxygens_on_each_other_are_penalised_with_neighbours_unless_the_chain_breaks(chignolin):
    bb = chignolin[:1].clone()
    # O of residue 7 put 0.1 nm from O of residue 6 (what a φ7 near 0 does): five bonds apart
    bb[0, 6, 3] = bb[0, 5, 3] + torch.tensor([0.1, 0.0, 0.0])
    mask, brk = flags(bb)
    base = float(backbone_violation(bb, mask, brk))
    with_neighbours = float(backbone_violation(bb, mask, brk, neighbours=True))
    assert base < 1e-5  # residues 6 and 7 are neighbours: the distant-pair check does not see them
    assert with_neighbours > (HEAVY_MIN_NM - 0.1) ** 2 / 10
    brk[0, 6] = True
    assert float(backbone_violation(bb, mask, brk, neighbours=True)) < 1e-5


def test_the_training_loss_adds_the_weighted_violation(atlas):
    windows = TrajectoryWindows([atlas], window=preset("tiny").window, seed=2)
    batch = collate_windows([windows[0], windows[1]])
    torch.manual_seed(0)
    # every diffusion time counts (τ_max 1): at large τ an untrained network's structures overlap
    net = StarMDNetwork(preset("tiny", backbone_loss_tau_max=1.0))
    off_loss, off = diffusion_loss(net, FrameDiffusion(net.config), batch, torch.Generator().manual_seed(4))
    assert "violation" not in off
    net.config = preset("tiny", backbone_loss_tau_max=1.0, violation_loss_weight=50.0)
    on_loss, on = diffusion_loss(net, FrameDiffusion(net.config), batch, torch.Generator().manual_seed(4))
    assert on["violation"] > 0
    assert float(on_loss.detach()) == pytest.approx(float(off_loss.detach()) + 50.0 * on["violation"], rel=1e-5)
    net.config = net.config.replace(violation_neighbours=True)
    _, wider = diffusion_loss(net, FrameDiffusion(net.config), batch, torch.Generator().manual_seed(4))
    assert wider["violation"] > on["violation"]  # the same draws: the neighbouring pairs only add


def test_cli_sets_the_weight_in_the_saved_config_and_rejects_a_negative_one(atlas, tmp_path, capsys):
    base = ["train", str(atlas), "--preset", "tiny", "--steps", "1", "--batch-size", "1", "--threads", "1"]
    for bad in ("-1", "inf", "nan"):
        assert main([*base, "-o", str(tmp_path / "bad"), "--violation-weight", bad]) == 2
        assert "--violation-weight must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*base, "-o", str(tmp_path / "m"), "--violation-weight", "5"]) == 0
    saved = json.loads((tmp_path / "m" / "model.json").read_text())["config"]
    assert saved["violation_loss_weight"] == 5.0 and "violation_neighbours" not in saved  # default: left out
    assert main([*base, "-o", str(tmp_path / "off"), "--violation-neighbours"]) == 2
    assert "give --violation-weight W as well" in capsys.readouterr().err
    assert not (tmp_path / "off").exists()
    assert main([*base, "-o", str(tmp_path / "n"), "--violation-weight", "5", "--violation-neighbours"]) == 0
    assert json.loads((tmp_path / "n" / "model.json").read_text())["config"]["violation_neighbours"] is True
