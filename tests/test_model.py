"""Model: config presets, SE(3)-invariance of the geometric layer, block causality, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import pytest
import torch

from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.protein import frames_from_positions
from openmm_starmd.frames.rigid import random_rotations
from openmm_starmd.model.attention import FrameIPA, frame_geometry
from openmm_starmd.model.checkpoint import load_model, save_model
from openmm_starmd.model.config import ModelConfig, preset
from openmm_starmd.model.network import StarMDNetwork, count_parameters
from openmm_starmd.model.tokens import Residues, clean_inputs, noisy_inputs

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cln025():
    traj = mdtraj.load(str(DATA / "cln025_3ns.xtc"), top=str(DATA / "cln025.pdb"))[:40:10]
    rot, trans, _ = frames_from_positions(traj, traj.topology)
    feats = featurize_topology(traj.topology)
    return rot, trans, feats


def randomised(config: ModelConfig, seed: int = 0) -> StarMDNetwork:
    """A network whose zero-initialised gates/heads are perturbed, so every path is exercised."""
    torch.manual_seed(seed)
    net = StarMDNetwork(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_presets_sizes_and_roundtrip():
    assert count_parameters(StarMDNetwork(preset("tiny"))) < 200_000
    base = preset("base")
    assert (base.num_blocks, base.width, base.num_heads) == (4, 256, 8)
    small = preset("small")
    assert ModelConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    with pytest.raises(StarMDError, match="preset"):
        preset("huge")
    with pytest.raises(StarMDError, match="divisible"):
        preset("tiny", width=33)
    with pytest.raises(StarMDError, match="unknown"):
        ModelConfig.from_dict({**small.to_dict(), "future_field": 1})


def test_frame_ipa_is_invariant_to_global_rigid_motion():
    torch.manual_seed(0)
    layer = FrameIPA(32, 2, 3, 2)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(2, 3, 7, 32, generator=gen)
    rot = random_rotations((2, 3, 7), gen)
    trans = torch.randn(2, 3, 7, 3, generator=gen)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, -2:] = False
    q = random_rotations((), gen)
    out = layer(h, frame_geometry(rot, trans, mask))
    moved = layer(h, frame_geometry(q @ rot, trans @ q.T + torch.tensor([3.0, -2.0, 1.0]), mask))
    assert torch.allclose(out, moved, atol=1e-4)
    # and it does look at geometry: moving one residue changes the others' outputs
    trans2 = trans.clone()
    trans2[:, :, 0] += 0.5
    assert not torch.allclose(out[:, :, 1:], layer(h, frame_geometry(rot, trans2, mask))[:, :, 1:], atol=1e-4)


def _training_forward(net: StarMDNetwork, rot: torch.Tensor, trans: torch.Tensor, feats) -> torch.Tensor:
    """Trunk output for K clean groups + K-1 noisy groups (noisy = clean frames, slightly moved)."""
    cfg = net.config
    K = trans.shape[0]
    res = Residues(feats.residue_type[None], feats.residue_index[None], feats.residue_mask[None],
                   feats.chain_break[None])
    r, t = rot[None], trans[None]
    has_prev = (torch.arange(K) > 0)[None]
    f_clean = clean_inputs(res, r, t, torch.cat([r[:, :1], r[:, :-1]], 1), torch.cat([t[:, :1], t[:, :-1]], 1),
                           has_prev, cfg.translation_scale)
    rel_rot = r[:, :-1].transpose(-1, -2) @ r[:, 1:]
    rel_x = torch.full_like(t[:, 1:], 0.1)
    f_noisy, n_rot, n_trans = noisy_inputs(res, r[:, :-1], t[:, :-1], rel_rot, rel_x, cfg.translation_scale,
                                           torch.full((1, K - 1), 0.4))
    frames = torch.arange(K)
    h, _ = net.trunk(torch.cat([f_clean, f_noisy], 1), res.residue_type, res.residue_index, res.residue_mask,
                     torch.cat([r, n_rot], 1), torch.cat([t, n_trans], 1), torch.full((1, 2 * K - 1), 0.3),
                     torch.log(torch.tensor([100.0])), torch.cat([frames, frames[1:]]),
                     torch.cat([torch.zeros(K, dtype=torch.bool), torch.ones(K - 1, dtype=torch.bool)]))
    return h[0]


def test_block_causality_bit_identical(cln025):
    rot, trans, feats = cln025
    net = randomised(preset("tiny"))
    K = rot.shape[0]
    with torch.no_grad():
        ref = _training_forward(net, rot, trans, feats)
        t = 1  # change frame t+1 = 2: everything of frames <= 1 must be bit-identical
        rot2, trans2 = rot.clone(), trans.clone()
        trans2[t + 1] += 0.3
        rot2[t + 1] = random_rotations((rot.shape[1],), torch.Generator().manual_seed(5))
        out = _training_forward(net, rot2, trans2, feats)
    clean_idx = list(range(t + 1))
    noisy_idx = [K + s - 1 for s in range(1, t + 1)]  # noisy copy of frame s sits at group K + s - 1
    for g in clean_idx + noisy_idx:
        assert torch.equal(ref[g], out[g]), f"group {g} changed"
    assert not torch.allclose(ref[t + 1], out[t + 1])  # the changed frame itself does change
    assert not torch.allclose(ref[K + t], out[K + t])  # so does the noisy target t+1 (its context changed)


def test_checkpoint_roundtrip_and_damage(tmp_path, cln025):
    rot, trans, feats = cln025
    net = randomised(preset("tiny"), seed=3)
    save_model(tmp_path / "m", net, {"step": 7})
    loaded, cfg = load_model(tmp_path / "m")
    assert cfg == net.config
    with torch.no_grad():
        assert torch.equal(_training_forward(net, rot, trans, feats), _training_forward(loaded, rot, trans, feats))
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["metadata"]["step"] == 7 and info["config"]["width"] == cfg.width
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StarMDError, match="damaged"):
        load_model(tmp_path / "m")
    with pytest.raises(StarMDError, match="not found"):
        load_model(tmp_path / "missing")


@pytest.mark.parametrize("align", [True, False])
def test_training_loss_ignores_tumbling_only_with_history_alignment(cln025, align):
    """With align_history the loss of a window is unchanged when each frame is moved rigidly on its own
    (the model sees internal motion only); without it the tumbling is part of the target."""
    from openmm_starmd.diffusion.sampler import FrameDiffusion
    from openmm_starmd.train.objective import diffusion_loss

    rot, trans, feats = cln025
    T = trans.shape[0]
    net = randomised(preset("tiny", align_history=align))
    gen = torch.Generator().manual_seed(2)
    q = random_rotations((T,), gen)
    shift = torch.randn(T, 3, generator=gen)

    def batch(r, t):
        return {"rotations": r[None], "translations": t[None], "residue_type": feats.residue_type[None],
                "residue_index": feats.residue_index[None], "residue_mask": feats.residue_mask[None],
                "chain_break": feats.chain_break[None], "dt_ps": torch.tensor([100.0])}

    moved = batch(q[:, None] @ rot, torch.einsum("tij,tnj->tni", q, trans) + shift[:, None])
    diffusion = FrameDiffusion(net.config)
    with torch.no_grad():
        a, _ = diffusion_loss(net, diffusion, batch(rot, trans), torch.Generator().manual_seed(0))
        b, _ = diffusion_loss(net, diffusion, moved, torch.Generator().manual_seed(0))
    assert (abs(float(a - b)) < 1e-4 * float(a)) if align else (abs(float(a - b)) > 0.1 * float(a))


def test_checkpoints_from_before_history_alignment_load_unaligned():
    old = {k: v for k, v in preset("small").to_dict().items() if k != "align_history"}
    assert ModelConfig.from_dict(old).align_history is False
    assert ModelConfig.from_dict(preset("small").to_dict()).align_history is True


def test_temperature_condition_is_optional_and_checked():
    from openmm_starmd.model.config import check_temperature

    small = preset("small")
    assert "temperature_condition" not in small.to_dict()  # old checkpoints' JSON unchanged
    assert not any("temperature" in k for k in StarMDNetwork(small).state_dict())  # and their weights
    warm = small.replace(temperature_condition=True, temperature_range_k=(320.0, 450.0))
    assert ModelConfig.from_dict(json.loads(json.dumps(warm.to_dict()))) == warm
    check_temperature(small, 300.0)
    check_temperature(warm, 400.0)
    with pytest.raises(StarMDError, match="trained at 300 K without a temperature condition"):
        check_temperature(small, 350.0)
    with pytest.raises(StarMDError, match="320-450 K; 300 K is outside"):
        check_temperature(warm, 300.0)
    assert any(k.startswith("temperature_embed") for k in StarMDNetwork(warm).state_dict())
