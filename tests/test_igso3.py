"""IGSO(3): normalisation, limits, sampler vs density (KS), score vs autograd and vs SO(3) differences."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from openmm_starmd.errors import StarMDError
from openmm_starmd.frames import igso3 as igso3_module
from openmm_starmd.frames import rigid
from openmm_starmd.frames.igso3 import IGSO3


@pytest.fixture(scope="module")
def dist() -> IGSO3:
    return IGSO3()


def _reference_cdf(dist: IGSO3, sigma: float):
    """Angle CDF by fine trapezoid integration of the closed-form density (independent of the tables)."""
    omega = torch.linspace(0.0, math.pi, 10001, dtype=torch.float64)
    pdf = dist.density(omega, sigma)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(pdf, omega)])
    omega_np, cdf_np = omega.numpy(), cdf.numpy()
    return lambda x: np.interp(x, omega_np, cdf_np)


@pytest.mark.parametrize("sigma", [0.01, 0.2, 0.9, 1.1, 2.5])
def test_density_is_normalised(dist, sigma):
    omega = torch.linspace(0.0, math.pi, 20001, dtype=torch.float64)
    assert abs(float(torch.trapezoid(dist.density(omega, sigma), omega)) - 1.0) < 1e-6


def test_two_evaluations_agree_where_they_switch():
    omega = torch.linspace(1e-3, math.pi, 50, dtype=torch.float64)
    for sigma in (0.6, 1.0, 1.5):
        s = torch.full_like(omega, sigma)
        small = igso3_module._log_f_small(omega, s)
        large = igso3_module._log_f_large(omega, s)
        assert torch.allclose(small[0], large[0], atol=1e-9)
        assert torch.allclose(small[1], large[1], atol=1e-8)


@pytest.mark.parametrize("sigma", [0.02, 0.3, 0.99, 1.0, 2.5])
def test_angle_score_equals_the_score_of_log_f_and_score(sigma):
    # one σ takes angle_score's own image sum below 1 (a wrong sign or factor there fails this)
    omega = torch.linspace(0.0, math.pi, 101, dtype=torch.float64)
    expected = igso3_module.log_f_and_score(omega, torch.full_like(omega, sigma))[1]
    assert torch.allclose(igso3_module.angle_score(omega, sigma), expected, rtol=1e-10, atol=1e-9)
    assert torch.allclose(igso3_module.angle_score(omega, torch.full_like(omega, sigma)), expected, rtol=1e-10)
    igso3_module._IMAGE_CONSTANTS.clear()
    with torch.inference_mode():  # constants first built by a rollout must still serve training
        igso3_module.angle_score(omega, sigma)
    grad_in = omega[1:-1].clone().requires_grad_(True)
    igso3_module.angle_score(grad_in, sigma).sum().backward()
    assert torch.isfinite(grad_in.grad).all()


def test_limits(dist):
    omega = torch.linspace(0.0, math.pi, 200, dtype=torch.float64)
    # Large σ: the uniform (Haar) angle law (1 - cos ω)/π.
    assert torch.allclose(dist.density(omega, 4.0), (1 - torch.cos(omega)) / math.pi, atol=1e-6)
    # Small σ: rotation vector ~ N(0, σ² I), angle ~ Maxwell(σ).
    sigma = 0.01
    om = torch.linspace(1e-4, 0.06, 200, dtype=torch.float64)
    maxwell = torch.from_numpy(stats.maxwell.pdf(om.numpy(), scale=sigma))
    assert torch.allclose(dist.density(om, sigma), maxwell, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.4, 1.5])
def test_sampled_angles_follow_density(dist, sigma):
    g = torch.Generator().manual_seed(123)
    angles = dist.sample(torch.full((10000,), sigma), g).norm(dim=-1).double().numpy()
    assert stats.kstest(angles, _reference_cdf(dist, sigma)).pvalue > 1e-3
    # The test has power: the same samples are rejected against a 10 % different σ.
    assert stats.kstest(angles, _reference_cdf(dist, 1.1 * sigma)).pvalue < 1e-6
    assert stats.kstest(angles, _reference_cdf(dist, sigma / 1.1)).pvalue < 1e-6


def test_sample_per_element_sigma_axis_and_reproducibility(dist):
    sigma = torch.tensor([0.1, 0.8]).repeat_interleave(5000).reshape(2, 5000)
    v = dist.sample(sigma, torch.Generator().manual_seed(7))
    assert v.shape == (2, 5000, 3) and v.dtype == torch.float32
    assert torch.equal(v, dist.sample(sigma, torch.Generator().manual_seed(7)))
    assert not torch.equal(v, dist.sample(sigma, torch.Generator().manual_seed(8)))
    for row, s in enumerate((0.1, 0.8)):
        angles = v[row].norm(dim=-1).double().numpy()
        assert stats.kstest(angles, _reference_cdf(dist, s)).pvalue > 1e-3
    # Isotropic axis: mean direction ~ 0, each coordinate² averages 1/3.
    axis = v[1] / v[1].norm(dim=-1, keepdim=True)
    assert axis.mean(0).abs().max() < 0.05
    assert ((axis**2).mean(0) - 1 / 3).abs().max() < 0.02


def test_below_table_uses_small_sigma_limit(dist):
    sigma = 1e-4
    angles = dist.sample(torch.full((5000,), sigma), torch.Generator().manual_seed(3)).norm(dim=-1)
    assert stats.kstest(angles.double().numpy(), stats.maxwell(scale=sigma).cdf).pvalue > 1e-3
    assert torch.equal(dist.sample(torch.zeros(4), torch.Generator()), torch.zeros(4, 3))
    with pytest.raises(StarMDError, match="sigma"):
        dist.sample(torch.tensor([-0.1]), torch.Generator())


def test_score_equals_autograd_of_log_density(dist):
    g = torch.Generator().manual_seed(11)
    n = 400
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, generator=g, dtype=torch.float64) * (math.pi - 2e-2) + 1e-3
    rotvec = (axis * angle[:, None]).requires_grad_(True)
    log_sigma = torch.empty(n, dtype=torch.float64).uniform_(math.log(0.02), math.log(3.0), generator=g)
    sigma = torch.exp(log_sigma)
    dist.log_density(rotvec, sigma).sum().backward()
    score = dist.score(rotvec.detach(), sigma)
    assert torch.allclose(score, rotvec.grad, rtol=1e-6, atol=1e-6 * float(rotvec.grad.abs().max()))
    # Small σ: the score is that of N(0, σ² I): -v/σ².
    v = torch.tensor([[0.01, -0.02, 0.015]], dtype=torch.float64)
    assert torch.allclose(dist.score(v, torch.tensor([0.05])), -v / 0.05**2, rtol=1e-3)


def test_score_is_the_gradient_on_so3(dist):
    """Central differences of log f along R exp(ε eᵢ), a path that does not go through the score formula."""
    g = torch.Generator().manual_seed(12)
    rot = rigid.so3_exp(torch.randn(20, 3, generator=g, dtype=torch.float64))
    rotvec = rigid.so3_log(rot)
    sigma = torch.full((20,), 0.6, dtype=torch.float64)
    eps = 1e-5
    numeric = torch.zeros(20, 3, dtype=torch.float64)
    for i in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[i] = eps
        plus = dist.log_density(rigid.so3_log(rot @ rigid.so3_exp(step)), sigma)
        minus = dist.log_density(rigid.so3_log(rot @ rigid.so3_exp(-step)), sigma)
        numeric[:, i] = (plus - minus) / (2 * eps)
    assert torch.allclose(dist.score(rotvec, sigma), numeric, atol=1e-5 * float(numeric.abs().max()) + 1e-6)


def test_score_norm_matches_monte_carlo(dist):
    g = torch.Generator().manual_seed(13)
    for sigma in (0.3, 1.2):
        s = torch.full((40000,), sigma, dtype=torch.float64)
        v = dist.sample(s, g)
        mc = (dist.score(v, s) ** 2).sum(-1).mean()
        assert abs(float(dist.score_norm(sigma)) / float(mc) - 1.0) < 0.05
    small = dist.score_norm(torch.tensor([1e-4, 2e-3]))
    assert torch.allclose(small, 3.0 / torch.tensor([1e-4, 2e-3]) ** 2, rtol=1e-2)
