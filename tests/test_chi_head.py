"""The χ head: bins, cross-entropy, sampling, learning real rotamers, and adding it to the shipped model."""

from __future__ import annotations

import math

import pytest
import torch

from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.model.chi import chi_bin, chi_loss, draw_chi, most_likely_chi, sample_chi
from openmm_starmd.model.config import ModelConfig, preset
from openmm_starmd.train.objective import diffusion_loss
from openmm_starmd.train.run import initial_model
from openmm_starmd.train.trainer import Trainer, TrainOptions


def test_bins_wrap_around_the_circle():
    bins = 36
    angles = torch.tensor([-math.pi, -math.pi + 1e-4, 0.0, math.pi - 1e-4, math.pi, 3 * math.pi / 2])
    idx = chi_bin(angles, bins)
    assert idx.tolist() == [0, 0, 18, 35, 0, 9]  # +π is −π; 3π/2 is −π/2


def test_cross_entropy_is_low_on_the_true_bin_and_masked_torsions_do_not_count():
    bins = 12
    angles = torch.tensor([0.3, -2.0, 1.0, 2.9]).reshape(1, 1, 1, 4)
    logits = torch.zeros(1, 1, 1, 4, bins)
    uniform = chi_loss(logits, angles, torch.ones(1, 1, 1, 4))
    assert uniform.item() == pytest.approx(math.log(bins), rel=1e-5)
    right = logits.clone()
    right.scatter_(-1, chi_bin(angles, bins)[..., None], 20.0)
    assert chi_loss(right, angles, torch.ones(1, 1, 1, 4)).item() < 1e-6
    wrong = right.clone()
    wrong[..., 3, :] = 0.0
    wrong[..., 3, 0] = 20.0  # torsion 4 confidently in the wrong bin ...
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    assert chi_loss(wrong, angles, mask).item() < 1e-6  # ... counts for nothing when masked
    assert chi_loss(wrong, angles, torch.ones(1, 1, 1, 4)).item() > 1.0


def test_sampling_follows_the_logits_and_reproduces_from_a_seed():
    bins = 36
    logits = torch.full((5000, 4, bins), -30.0)
    logits[:, 0, 2] = 0.0  # χ1: always bin 2
    logits[:, 1, 10] = 0.0  # χ2: bins 10 and 30, equally
    logits[:, 1, 30] = 0.0
    draw = sample_chi(logits, torch.Generator().manual_seed(0))
    assert draw.shape == (5000, 4)
    width = 2 * math.pi / bins
    assert torch.all(chi_bin(draw[:, 0], bins) == 2)
    lo = -math.pi + 2 * width
    assert draw[:, 0].min() >= lo and draw[:, 0].max() < lo + width
    assert draw[:, 0].std() > 0.2 * width  # uniform inside the bin, not its centre
    second = chi_bin(draw[:, 1], bins)
    assert set(second.unique().tolist()) == {10, 30}
    assert abs((second == 10).float().mean().item() - 0.5) < 0.03
    again = sample_chi(logits, torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)
    assert torch.allclose(most_likely_chi(logits)[:, 0], torch.tensor(lo + width / 2))


def test_fallback_draws_come_after_the_draws_from_flattened_logits():
    bins = 36
    logits = torch.full((2, 3, 4, bins), -12.0)
    logits[..., 5] = 0.0  # every torsion: bin 5, the other bins e^-12 each (~2e-4 of the mass together)
    plain = draw_chi(logits, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 8)
    both = draw_chi(logits, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 8, 400, 4.0)
    assert plain.shape == (2, 8, 3, 4) and both.shape == (2, 408, 3, 4)
    assert torch.equal(both[:, :8], plain)  # the first M draws do not change
    assert torch.all(chi_bin(plain, bins) == 5)
    fallback = chi_bin(both[:, 8:], bins)
    # at T = 4 each other bin carries e^-3 / (1 + 35 e^-3) ≈ 1.8 % of the mass, 64 % together: every bin appears
    share = (fallback != 5).float().mean().item()
    assert abs(share - 35 * math.exp(-3) / (1 + 35 * math.exp(-3))) < 0.02
    assert len(fallback.unique()) == bins
    with pytest.raises(Exception, match="chi_fallback_temperature"):
        preset("tiny", chi_fallback_temperature=0.5)
    with pytest.raises(Exception, match="chi_fallback_draws"):
        preset("tiny", chi_fallback_draws=-1)
    assert "chi_fallback_draws" not in preset("small").to_dict()  # old model.json files stay as they were


def test_config_keeps_old_checkpoint_json_and_checks_bins():
    old = preset("small").to_dict()
    assert "chi_bins" not in old and "chi_loss_weight" not in old  # unchanged JSON for models without it
    assert ModelConfig.from_dict(old) == preset("small")
    with pytest.raises(Exception, match="chi_bins"):
        preset("tiny", chi_bins=1)


def test_tiny_chi_head_learns_chignolin_rotamers(atlas, tmp_path):
    config = preset("tiny", chi_head=True, chi_bins=12, chi_loss_weight=1.0)
    data = TrajectoryWindows([atlas], window=config.window, seed=0)
    items = [data[i] for i in range(8)]
    opts = TrainOptions(steps=60, batch_size=4, lr=3e-3, warmup_steps=5, val_every=10**9, val_batches=2,
                        checkpoint_every=10**9, progress=False)
    trainer = Trainer(config, items, items, tmp_path / "m", opts, collate_windows)
    diffusion = FrameDiffusion(config)

    def chi_part() -> float:
        with torch.no_grad():
            parts = diffusion_loss(trainer.net, diffusion, collate_windows(items), torch.Generator().manual_seed(1))[1]
        return parts["chi"]

    before = chi_part()
    assert before == pytest.approx(math.log(12), rel=1e-4)  # zero-initialised head: uniform
    trainer.fit()
    # Chignolin's side chains sit in 1–3 wells each: the head must learn far better than uniform.
    assert chi_part() < 0.6 * before


def test_chi_head_added_to_a_model_without_one_keeps_its_frames(atlas, tmp_path):
    config, weights, record = initial_model("default", None, None)
    # An older checkpoint: the shipped model's trunk and frame head, no χ head.
    config = config.replace(chi_head=False)
    weights = {k: v for k, v in weights.items() if not k.startswith("chi_head.")}
    with_chi = config.replace(chi_head=True)
    opts = TrainOptions(steps=1, batch_size=1, lr=1e-9, warmup_steps=1, val_every=10**9, checkpoint_every=10**9,
                        progress=False)
    data = TrajectoryWindows([atlas], window=config.window, seed=0)
    trainer = Trainer(with_chi, [data[0]], None, tmp_path / "ft", opts, collate_windows, init_weights=weights,
                      record={"init": record})
    state = trainer.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())  # the trunk and frame head as saved
    assert torch.count_nonzero(state["chi_head.weight"]) == 0  # the new head starts uniform
