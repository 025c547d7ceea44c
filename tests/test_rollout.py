"""Rollout: cached = uncached recomputation, SE(3) equivariance of generated frames, exact resume."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import pytest
import torch

from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.denoiser import sample_full_history
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import frames_from_positions
from openmm_starmd.frames.rigid import geodesic_distance, random_rotations
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.model.tokens import Residues
from openmm_starmd.rollout import Rollout

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


def _replica_frames(rot, trans, k, t):
    """A distinct history per replica: replica k starts k frames later."""
    return rot[t + k], trans[t + k]


def test_replicas_reproduce_single_runs_and_share_one_pass_per_step(cln025):
    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=0.05)
    R, steps, seeds = 3, 3, (5, 9, 2)
    # eager: a trace inlines the blocks, and the hook below counts their calls
    batch = Rollout(net, feats, num_steps=steps, replicas=R, traced=False)
    singles = [Rollout(net, feats, num_steps=steps, traced=False) for _ in range(R)]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    single_gens = [torch.Generator().manual_seed(s) for s in seeds]
    for t in range(3):
        frames = [_replica_frames(rot, trans, k, t) for k in range(R)]
        batch.push(torch.stack([f[0] for f in frames]), torch.stack([f[1] for f in frames]))
        for k, ro in enumerate(singles):
            ro.push(*frames[k])
    calls = []
    hook = net.blocks[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    for _ in range(2):  # two jumps; each draw is fed back as the next frame
        b_rot, b_trans = batch.sample(100.0, gens)
        batch.push(b_rot, b_trans)
        for k, ro in enumerate(singles):
            s_rot, s_trans = ro.sample(100.0, single_gens[k])
            ro.push(s_rot, s_trans)
            torch.testing.assert_close(b_rot[k], s_rot, atol=2e-5, rtol=0)
            torch.testing.assert_close(b_trans[k], s_trans, atol=2e-5, rtol=0)
    hook.remove()
    # per jump: one batched forward per sampler step and one push, then R single runs of steps + 1 each
    assert calls == 2 * ([R] * (steps + 1) + [1] * (R * (steps + 1)))
    assert not torch.allclose(b_trans[0], b_trans[1], atol=1e-3)  # replicas differ
    assert batch.counts == [5, 5, 5]


def test_traced_evaluations_give_the_eager_draws(cln025):
    """The rollout's TorchScript traces (one per replica count and cached-frame count) reproduce the eager
    network while the cache fills and slides, over multi-step jumps, for replicas with unequal histories."""
    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=0.05, chi_head=True)
    runs = {}
    for traced in (True, False):
        ro = Rollout(net, feats, num_steps=3, replicas=2, max_step_ps=50.0, traced=traced)
        ro.push(rot[:2], trans[:2])
        ro.push(rot[2:3], trans[2:3], replicas=[1])  # replica 1 one frame ahead: two groups per model step
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        frames, chis = [], []
        for _ in range(2 * net.config.window):  # each draw is two model steps: the cache slides
            r, x = ro.sample(100.0, gens)
            ro.push(r, x)
            frames.append(x)
            chis.append(ro.last_chi)
        runs[traced] = torch.stack(frames), torch.stack(chis), set(ro._traced)
    torch.testing.assert_close(runs[True][0], runs[False][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(runs[True][1], runs[False][1], atol=1e-5, rtol=0)
    assert not runs[False][2]
    # traced only once the history fills the window: one trace per number of replicas drawn together
    assert runs[True][2] == {(1, net.config.window)}


def test_a_network_that_cannot_be_traced_runs_eagerly_with_a_warning(cln025, monkeypatch):
    rot, trans, feats = cln025
    net = randomised()
    W = net.config.window
    eager = _pushed(net, feats, rot[:W], trans[:W], num_steps=2, traced=False)
    want = eager.sample(20.0, torch.Generator().manual_seed(4))[1]

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing unsupported here")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    ro = _pushed(net, feats, rot[:W], trans[:W], num_steps=2)
    with pytest.warns(RuntimeWarning, match="could not trace"):
        got = ro.sample(20.0, torch.Generator().manual_seed(4))[1]
    assert ro._traced == {(1, W): None}  # asked once, then eager without asking again
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_replicas_with_unequal_histories_are_grouped_and_stay_exact(cln025):
    """A replica that retried with half jumps has one frame more: sampled in its own pass, still exact."""
    rot, trans, feats = cln025
    net = randomised()
    batch = Rollout(net, feats, num_steps=2, replicas=3, traced=False)  # eager: the hook counts block calls
    singles = [Rollout(net, feats, num_steps=2) for _ in range(3)]  # traced
    batch.push(rot[:3], trans[:3])
    batch.push(rot[3:4], trans[3:4], replicas=[1])  # replica 1 only
    batch.push(rot[4:6], trans[4:6], replicas=[2, 0])  # in the order of the list
    batch.push(rot[7:8], trans[7:8], replicas=[1])
    for ro, frames in zip(singles, [(0, 5), (1, 3, 7), (2, 4)], strict=True):
        for t in frames:
            ro.push(rot[t], trans[t])
    assert batch.counts == [2, 3, 2]
    calls = []
    hook = net.blocks[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    got = batch.sample([10.0, 5.0, 10.0], [torch.Generator().manual_seed(k) for k in range(3)])
    hook.remove()
    assert sorted(calls) == [1, 1, 2, 2]  # two groups (history lengths 2 and 3), 2 steps each
    for k, dt in enumerate([10.0, 5.0, 10.0]):
        want = singles[k].sample(dt, torch.Generator().manual_seed(k))
        torch.testing.assert_close(got[0][k], want[0], atol=2e-5, rtol=0)
        torch.testing.assert_close(got[1][k], want[1], atol=2e-5, rtol=0)
    part = batch.sample(10.0, [torch.Generator().manual_seed(2)], replicas=[2])
    torch.testing.assert_close(part[1][0], got[1][2], atol=2e-5, rtol=0)


def test_replica_state_dict_resumes_every_replica_exactly(cln025):
    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=0.05)
    ro = Rollout(net, feats, num_steps=2, replicas=2)
    ro.push(rot[:2], trans[:2])
    ro.push(rot[2:3], trans[2:3], replicas=[0])
    resumed = Rollout(net, feats, num_steps=2, replicas=2)
    resumed.load_state_dict(ro.state_dict())
    assert resumed.counts == [2, 1]
    for r in (ro, resumed):
        r.push(rot[3:5], trans[3:5])
    a = ro.sample(50.0, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    b = resumed.sample(50.0, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(StarMDError, match="replicas"):
        Rollout(net, feats, replicas=3).load_state_dict(ro.state_dict())
    with pytest.raises(StarMDError, match="replicas"):
        Rollout(net, feats).load_state_dict(ro.state_dict())


def test_replica_arguments_are_validated(cln025):
    rot, trans, feats = cln025
    net = randomised()
    ro = Rollout(net, feats, num_steps=2, replicas=2)
    with pytest.raises(StarMDError, match=r"\[2,10,3,3\]"):
        ro.push(rot[0], trans[0])
    with pytest.raises(StarMDError, match="distinct"):
        ro.push(rot[:2], trans[:2], replicas=[0, 0])
    with pytest.raises(StarMDError, match="distinct"):
        ro.push(rot[:1], trans[:1], replicas=[2])
    ro.push(rot[:2], trans[:2])
    with pytest.raises(StarMDError, match="one generator"):
        ro.sample(10.0, [torch.Generator()])
    with pytest.raises(StarMDError, match="Generator"):
        ro.sample(10.0, [torch.Generator(), "seed"])
    with pytest.raises(StarMDError, match="replicas=R"):
        Rollout(net, feats).push(rot[0], trans[0], replicas=[0])
    with pytest.raises(StarMDError, match="replicas must be"):
        Rollout(net, feats, replicas=0)


def test_rollout_makes_every_tensor_on_the_model_device(cln025):
    """No tensor factory without device= and no result off the model's device (tests/devicecheck.py)."""
    from devicecheck import DeviceCheck

    rot, trans, feats = cln025
    net = randomised(ctx_tau_inference=0.05)
    with DeviceCheck("cpu") as check:
        ro = Rollout(net, feats, num_steps=2, replicas=2)
        ro.push(rot[:2], trans[:2])
        ro.push(rot[2:4], trans[2:4])
        ro.push(rot[4:5], trans[4:5], replicas=[1])
        ro.sample([10.0, 5.0], [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
        Rollout(net, feats, num_steps=2, replicas=2).load_state_dict(ro.state_dict())
        single = Rollout(net, feats, num_steps=2)
        single.push(rot[0], trans[0])
        single.sample(10.0, torch.Generator().manual_seed(0))
    assert check.checked > 1000  # the check saw the package's calls


def test_device_check_flags_implicit_factories_and_off_device_results():
    from devicecheck import DeviceCheck

    outside = torch.ones(3)
    with pytest.raises(AssertionError, match=r"torch\.zeros without device="):
        with DeviceCheck("cpu", roots=[__file__]):
            torch.zeros(3)
    with DeviceCheck("cpu", roots=[__file__]):
        torch.zeros(3, device="cpu") + outside
    # on an accelerator the same computation would be off the model's device ("meta" stands in for it)
    with pytest.raises(AssertionError, match="result on cpu, expected meta"):
        with DeviceCheck("meta", roots=[__file__]):
            outside * 2
    with DeviceCheck("meta", roots=[__file__]):  # deliberate host work is allowed
        (torch.arange(4, device="cpu") * 2.0).tolist()
        outside.to("cpu", copy=True)


def test_long_jump_in_model_steps_equals_stepping_by_hand_and_a_rejected_draw_leaves_no_trace(cln025):
    rot, trans, feats = cln025
    net = randomised(chi_head=True)
    stepped = _pushed(net, feats, rot[:3], trans[:3], num_steps=2, max_step_ps=250.0)
    by_hand = _pushed(net, feats, rot[:3], trans[:3], num_steps=2)
    # a draw that is then rejected: resampling with the same seed gives the same frame
    first = stepped.sample(1000.0, torch.Generator().manual_seed(3))
    again = stepped.sample(1000.0, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert stepped.count == 3
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # the four 250 ps steps of a 1 ns jump, by hand
        by_hand.push(*by_hand.sample(250.0, gen))
    final = by_hand.sample(250.0, gen)
    torch.testing.assert_close(final[0], again[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(final[1], again[1], atol=1e-6, rtol=0)
    assert stepped.last_chi.shape == (net.config.chi_draws, feats.residue_type.shape[0], 4)
    torch.testing.assert_close(stepped.last_chi, by_hand.last_chi, atol=1e-5, rtol=0)  # the last step's χ
    # the caller's version of the draw commits the three intermediate frames with it
    accepted = (rot[5], trans[5])
    stepped.push(*accepted)
    by_hand.push(*accepted)
    assert stepped.count == by_hand.count == 7
    a = stepped.sample(100.0, torch.Generator().manual_seed(8))
    b = by_hand.sample(100.0, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
    # a shorter draw in between drops the pending frames
    stepped.sample(1000.0, torch.Generator().manual_seed(1))
    stepped.sample(200.0, torch.Generator().manual_seed(1))
    stepped.push(*accepted)
    assert stepped.count == 8
    with pytest.raises(StarMDError, match="max_step_ps"):
        Rollout(net, feats, max_step_ps=-1.0)


def test_a_chain_longer_than_max_step_residues_takes_each_jump_in_one_step(cln025):
    rot, trans, feats = cln025  # chignolin: 10 residues
    one_step = randomised(max_step_ps=0.0)
    expected = _pushed(one_step, feats, rot[:3], trans[:3], num_steps=2).sample(1000.0,
                                                                               torch.Generator().manual_seed(5))
    for longest, steps in ((9, 1), (10, 4), (0, 4)):
        net = randomised(max_step_ps=250.0, max_step_residues=longest)
        ro = _pushed(net, feats, rot[:3], trans[:3], num_steps=2)
        assert ro.max_step_ps == (0.0 if steps == 1 else 250.0) and ro._steps(1000.0) == steps
        draw = ro.sample(1000.0, torch.Generator().manual_seed(5))
        assert torch.equal(draw[1], expected[1]) == (steps == 1)  # the same draw as a one-step model's
    # an explicit model step is the caller's choice, whatever the chain's length
    assert Rollout(randomised(max_step_ps=250.0, max_step_residues=9), feats, max_step_ps=250.0)._steps(1000.0) == 4
    with pytest.raises(StarMDError, match="max_step_residues"):
        randomised(max_step_residues=-1)


@pytest.mark.parametrize("ode", [None, "last", "intermediate"])
def test_replicas_take_their_own_number_of_model_steps(cln025, ode):
    rot, trans, feats = cln025
    net = randomised() if ode is None else randomised(deterministic_sampler=True, deterministic_steps=ode)
    batch = Rollout(net, feats, num_steps=2, replicas=2, max_step_ps=300.0)
    singles = [Rollout(net, feats, num_steps=2, max_step_ps=300.0) for _ in range(2)]
    batch.push(rot[:2], trans[:2])
    for k, ro in enumerate(singles):
        ro.push(rot[k], trans[k])
    dts, seeds = [900.0, 300.0], [4, 6]  # three model steps and one
    b_rot, b_trans = batch.sample(dts, [torch.Generator().manual_seed(s) for s in seeds])
    for k, ro in enumerate(singles):
        s_rot, s_trans = ro.sample(dts[k], torch.Generator().manual_seed(seeds[k]))
        torch.testing.assert_close(b_rot[k], s_rot, atol=2e-5, rtol=0)
        torch.testing.assert_close(b_trans[k], s_trans, atol=2e-5, rtol=0)
    batch.push(b_rot, b_trans)
    assert batch.counts == [4, 2]


@pytest.mark.parametrize("ode", ["last", "intermediate"])
def test_the_ode_takes_only_the_model_steps_it_is_set_for(cln025, ode):
    rot, trans, feats = cln025
    net = randomised(deterministic_sampler=True, deterministic_steps=ode)
    stepped = _pushed(net, feats, rot[:3], trans[:3], num_steps=3, max_step_ps=250.0)
    by_hand = _pushed(net, feats, rot[:3], trans[:3], num_steps=3)
    sde, ode_config = net.config.replace(deterministic_sampler=False), net.config.replace(deterministic_steps="all")
    first, last = (sde, ode_config) if ode == "last" else (ode_config, sde)

    def four_steps(ro: Rollout, last_config) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(5)
        ro.config = first
        for _ in range(3):
            ro.push(*ro.sample(250.0, gen))
        ro.config = last_config
        return ro.sample(250.0, gen)

    want = four_steps(by_hand, last)
    got = stepped.sample(1000.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
    # the same steps with the intermediate steps' sampler on the last one too are another draw
    other = four_steps(_pushed(net, feats, rot[:3], trans[:3], num_steps=3), first)
    assert (other[1] - want[1]).abs().max() > 1e-3
    # one-step draws are their own last step
    single = _pushed(net, feats, rot[:3], trans[:3], num_steps=3)
    reference = _pushed(net, feats, rot[:3], trans[:3], num_steps=3)
    reference.config = last
    a = single.sample(250.0, torch.Generator().manual_seed(2))
    b = reference.sample(250.0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=0)
    with pytest.raises(StarMDError, match="deterministic_steps"):
        net.config.replace(deterministic_steps="first")


def test_intermediate_model_steps_take_their_own_sampler_steps(cln025):
    rot, trans, feats = cln025
    net = randomised(num_sampler_steps=3, intermediate_sampler_steps=2, deterministic_sampler=True,
                     deterministic_steps="last")
    stepped = _pushed(net, feats, rot[:3], trans[:3], max_step_ps=250.0)
    by_hand = _pushed(net, feats, rot[:3], trans[:3])
    gen = torch.Generator().manual_seed(5)
    by_hand.config = net.config.replace(num_sampler_steps=2, deterministic_sampler=False)
    for _ in range(3):
        by_hand.push(*by_hand.sample(250.0, gen))
    by_hand.config = net.config
    want = by_hand.sample(250.0, gen)
    got = stepped.sample(1000.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=0)
    with pytest.raises(StarMDError, match="intermediate_sampler_steps"):
        net.config.replace(intermediate_sampler_steps=-1)
