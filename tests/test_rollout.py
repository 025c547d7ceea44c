"""Rollout: cached = uncached recomputation, SE(3) equivariance of generated frames, exact resume."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import pytest
import torch

from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import frames_from_positions
from openmm_starmd.frames.rigid import geodesic_distance, random_rotations
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.model.tokens import Residues
from openmm_starmd.rollout import Rollout, sample_full_history

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cln025():
    traj = mdtraj.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))[::25]
    rot, trans, _ = frames_from_positions(traj, traj.topology)
    return rot, trans, featurize_topology(traj.topology)


def randomised(**changes) -> StarMDNetwork:
    torch.manual_seed(0)
    net = StarMDNetwork(preset("tiny", **changes))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _pushed(net, feats, rot, trans, **kw) -> Rollout:
    ro = Rollout(net, feats, **kw)
    for t in range(rot.shape[0]):
        ro.push(rot[t], trans[t])
    return ro


@pytest.mark.parametrize("ctx_tau", [0.0, 0.05])
def test_cached_rollout_equals_uncached_recomputation(cln025, ctx_tau):
    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=ctx_tau)
    T = 2 * net.config.window + 1  # longer than the window: the cache has slid
    ro = _pushed(net, feats, rot[:T], trans[:T])
    assert ro.cache.num_frames == net.config.window
    cached = ro.sample(500.0, torch.Generator().manual_seed(11))
    res = Residues(feats.residue_type[None], feats.residue_index[None], feats.residue_mask[None],
                   feats.chain_break[None])
    full = sample_full_history(net, res, rot[:T], trans[:T], 500.0, torch.Generator().manual_seed(11))
    assert torch.allclose(cached[0], full[0], atol=1e-5)
    assert torch.allclose(cached[1], full[1], atol=1e-5)
    # the history matters: a different context gives a different draw for the same seed
    other = sample_full_history(net, res, rot[1:T + 1], trans[1:T + 1], 500.0, torch.Generator().manual_seed(11))
    assert not torch.allclose(cached[1], other[1], atol=1e-3)


def test_generated_frames_are_se3_equivariant(cln025):
    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=0.05)
    gen = torch.Generator().manual_seed(3)
    q = random_rotations((), gen)
    shift = torch.tensor([1.5, -0.7, 2.0])
    a = _pushed(net, feats, rot[:5], trans[:5]).sample(100.0, torch.Generator().manual_seed(4))
    b = _pushed(net, feats, q @ rot[:5], trans[:5] @ q.T + shift).sample(100.0, torch.Generator().manual_seed(4))
    assert float(geodesic_distance(q @ a[0], b[0]).max()) < 1e-3
    assert float((a[1] @ q.T + shift - b[1]).abs().max()) < 1e-3
    # non-trivial: the sample moved away from the last pushed frame
    assert float((a[1] - trans[4]).norm(dim=-1).mean()) > 1e-2


def test_history_tumbling_is_ignored_and_the_draw_follows_the_last_frame(cln025):
    """align_history: rigidly moving each history frame on its own changes nothing but the pose of the draw,
    which follows the last frame; without alignment the tumbling reaches the model."""
    rot, trans, feats = cln025
    gen = torch.Generator().manual_seed(8)
    q = random_rotations((5,), gen)
    shift = torch.randn(5, 3, generator=gen)
    moved_rot, moved_trans = q[:, None] @ rot[:5], torch.einsum("tij,tnj->tni", q, trans[:5]) + shift[:, None]
    for align in (True, False):
        net = randomised(align_history=align)
        a = _pushed(net, feats, rot[:5], trans[:5]).sample(100.0, torch.Generator().manual_seed(4))
        b = _pushed(net, feats, moved_rot, moved_trans).sample(100.0, torch.Generator().manual_seed(4))
        error = float((a[1] @ q[4].T + shift[4] - b[1]).abs().max())
        assert (error < 1e-5) if align else (error > 1e-3)


def test_state_dict_resume_continues_exactly(cln025):
    rot, trans, feats = cln025
    net = randomised()
    ro = _pushed(net, feats, rot[:6], trans[:6])
    state = ro.state_dict()
    resumed = Rollout(net, feats.residue_type, feats.residue_index, feats.residue_mask, feats.chain_break)
    resumed.load_state_dict(state)
    for r in (ro, resumed):  # continue both: one more push, then a jump
        r.push(rot[6], trans[6])
    a = ro.sample(50.0, torch.Generator().manual_seed(1))
    b = resumed.sample(50.0, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert resumed.count == 7


def test_sample_does_not_append_and_validates_input(cln025):
    rot, trans, feats = cln025
    net = randomised()
    ro = Rollout(net, feats, num_steps=2)
    with pytest.raises(StarMDError, match="push"):
        ro.sample(10.0, torch.Generator())
    ro.push(rot[0], trans[0])
    ro.sample(10.0, torch.Generator().manual_seed(0))
    assert ro.count == 1 and ro.cache.num_frames == 1
    with pytest.raises(StarMDError, match="rotations"):
        ro.push(rot[0, :3], trans[0])
    with pytest.raises(StarMDError, match="dt_ps"):
        ro.sample(-1.0, torch.Generator())
