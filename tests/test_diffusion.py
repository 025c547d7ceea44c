"""Diffusion processes and the reverse-time sampler, checked against exact Gaussian / delta targets."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from openmm_starmd.diffusion import FrameDiffusion, R3Diffuser, SO3Diffuser, VPSchedule, sample_relative
from openmm_starmd.frames.igso3 import SWITCH_SIGMA
from openmm_starmd.frames.rigid import geodesic_distance, random_rotations, so3_exp
from openmm_starmd.model.config import preset


def test_vp_schedule_preserves_variance():
    s = VPSchedule(0.1, 20.0)
    tau = torch.linspace(0, 1, 11)
    assert torch.allclose(s.alpha(tau) ** 2 + s.sigma(tau) ** 2, torch.ones(11), atol=1e-6)
    assert float(s.alpha(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(s.alpha(torch.tensor(1.0))) < 0.01  # τ = 1 is (nearly) pure noise


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize(("method", "steps"), [("euler", 200), ("exponential", 100)])
def test_r3_reverse_process_recovers_gaussian_data(deterministic, method, steps):
    """With the exact posterior-mean denoiser of N(μ, s²) data the sampler must return that law
    (both integrators, on the default power-2 τ grid)."""
    cfg = preset("tiny", sampler_method=method)
    diff = FrameDiffusion(cfg)
    mu, s = 0.7, 0.3
    sched = diff.r3.schedule

    def denoise(rot, x, tau):
        t = torch.tensor(tau)
        a, sig = sched.alpha(t), sched.sigma(t)
        x0 = mu + a * s * s / (a * a * s * s + sig * sig) * (x - a * mu)
        return rot, x0

    gen = torch.Generator().manual_seed(0)
    _, x = sample_relative(denoise, (4000,), diff, gen, num_steps=steps, deterministic=deterministic)
    assert float(x.mean()) == pytest.approx(mu, abs=0.03)
    assert float(x.std()) == pytest.approx(s, rel=0.08)


def test_r3_score_matches_noise():
    r3 = R3Diffuser(0.1, 20.0)
    x0 = torch.randn(100, 3, generator=torch.Generator().manual_seed(1))
    tau = torch.full((100,), 0.4)
    xt, eps = r3.add_noise(x0, tau, torch.Generator().manual_seed(2))
    sigma = r3.schedule.sigma(tau)[:, None]
    assert torch.allclose(r3.score(xt, x0, tau), -eps / sigma, atol=1e-4)


def test_so3_noise_score_and_smooth_gradient():
    so3 = SO3Diffuser(0.05, 1.5)
    gen = torch.Generator().manual_seed(3)
    r0 = random_rotations((64,), gen)
    tau = torch.full((64,), 0.5)
    rt, omega = so3.add_noise(r0, tau, gen)
    assert torch.allclose(so3.score(rt, r0, tau), so3.noise_score(omega, tau), atol=1e-3, rtol=1e-3)
    # the score of IGSO(3) points back towards the centre: negative along ω
    assert bool(((so3.noise_score(omega, tau) * omega).sum(-1) < 0).all())
    # gradient at the centre itself (ω = 0) must be finite: it occurs at initialisation
    v = torch.zeros(4, 3, requires_grad=True)
    so3.rotvec_score(v, torch.full((4,), 0.1)).sum().backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("deterministic", [False, True])
def test_so3_reverse_process_contracts_to_target(deterministic):
    """Towards a point mass at R0 the reverse process must end within ~σ_min of R0, starting from σ_max."""
    cfg = preset("tiny")
    diff = FrameDiffusion(cfg)
    gen = torch.Generator().manual_seed(4)
    target = random_rotations((500,), gen)
    rot = target @ diff.so3.prior((500,), gen, "cpu")
    start = geodesic_distance(rot, target).mean()
    taus = torch.linspace(1.0, cfg.tau_min, 100).tolist()
    for tau, nxt in itertools.pairwise(taus):
        rot = diff.so3.reverse_step(rot, target, tau, tau - nxt, gen, deterministic)
    end = geodesic_distance(rot, target)
    sigma_end = float(diff.so3.schedule.sigma(torch.tensor(cfg.tau_min)))
    assert float(start) > 1.0
    # the mean angle of IGSO(3)(σ) for small σ is ≈ 2σ·sqrt(2/π) (Maxwell mean); allow generous slack
    assert float(end.mean()) < 4 * sigma_end * math.sqrt(2 / math.pi) + 0.02


@pytest.mark.parametrize("deterministic", [False, True])
def test_so3_reverse_step_traced_equals_eager(deterministic):
    """Sampling (no autograd) runs the rotation step as a frozen trace per side of the score's σ switch; it must
    give exactly the eager step's rotations, on both sides, with one generator per batch element."""
    diff = FrameDiffusion(preset("tiny"))
    gen = torch.Generator().manual_seed(5)
    rot, target = random_rotations((2, 6), gen), random_rotations((2, 6), gen)
    taus = [0.95, 0.9, 0.3, 0.25]  # σ above the switch (the cosine series), then below it (the image sum)
    sigmas = [diff.so3.schedule.sigma_g2(t)[0] for t in taus]
    assert sigmas[0] > SWITCH_SIGMA > sigmas[-1]
    for tau in taus:
        gens = [[torch.Generator().manual_seed(11 + b) for b in range(2)] for _ in range(2)]
        eager = diff.so3.reverse_step(rot, target, tau, 0.05, gens[0], deterministic)
        with torch.no_grad():
            traced = diff.so3.reverse_step(rot, target, tau, 0.05, gens[1], deterministic)
        assert torch.equal(traced, eager)
        rot = eager
    assert sorted(key[3] for key in diff.so3._traced) == [False, True]  # one trace per side of the switch
    assert all(step is not None for step in diff.so3._traced.values())


def test_so3_reverse_step_that_cannot_be_traced_runs_eagerly_with_a_warning(monkeypatch):
    diff = FrameDiffusion(preset("tiny"))
    gen = torch.Generator().manual_seed(6)
    rot, target = random_rotations((2, 4), gen), random_rotations((2, 4), gen)
    gens = [[torch.Generator().manual_seed(21 + b) for b in range(2)] for _ in range(3)]
    want = diff.so3.reverse_step(rot, target, 0.5, 0.05, gens[0], False)

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing unsupported here")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="could not trace the rotation reverse step"):
        got = diff.so3.reverse_step(rot, target, 0.5, 0.05, gens[1], False)
    assert list(diff.so3._traced.values()) == [None]  # asked once, remembered as eager
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        again = diff.so3.reverse_step(rot, target, 0.5, 0.05, gens[2], False)
    assert torch.equal(got, want) and torch.equal(again, want)


def test_sampler_is_reproducible_from_generator():
    cfg = preset("tiny")
    diff = FrameDiffusion(cfg)

    def denoise(rot, x, tau):
        return rot @ so3_exp(0.1 * torch.ones_like(x)), 0.5 * x

    a = sample_relative(denoise, (3, 5), diff, torch.Generator().manual_seed(7))
    b = sample_relative(denoise, (3, 5), diff, torch.Generator().manual_seed(7))
    c = sample_relative(denoise, (3, 5), diff, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
