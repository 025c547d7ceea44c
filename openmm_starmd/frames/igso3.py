"""The isotropic Gaussian on SO(3), IGSO(3): density, sampling and score for rotation noise.

Convention: ``IGSO(3)(σ)`` is the law at time ``σ²`` of Brownian motion on SO(3) (generator ½Δ under
the metric whose geodesic distance is the rotation angle). For small σ the rotation vector is close to
``N(0, σ² I₃)``. A rotation of angle ω has density, with respect to the uniform (Haar) measure,

    f(ω; σ) = Σ_l (2l+1) exp(-l(l+1) σ²/2) sin((l+½)ω) / sin(ω/2),

and its angle has density ``p(ω; σ) = (1 - cos ω)/π · f(ω; σ)`` on ``[0, π]``.

Two evaluations of ``f`` are used, each where it converges in a handful of terms:

* σ < 1: the Poisson-summed (image) form, exact and stable for small σ,
  ``f = √(2π) e^{σ²/8} / (σ³ sin(ω/2)) Σ_k (-1)^k (ω + 2πk) exp(-(ω + 2πk)²/(2σ²))``, k = -2..2;
* σ ≥ 1: the series rewritten as a cosine series ``f = C₀ + 2 Σ_m C_m cos(mω)`` (no 0/0 at ω = 0).

Sampling inverts the angle CDF tabulated once on a grid of σ (log-spaced) × ω; the score and the
density are evaluated in closed form.
"""

from __future__ import annotations

import math

import torch

from openmm_starmd.errors import StarMDError

__all__ = ["IGSO3", "SWITCH_SIGMA", "angle_score", "log_f_and_score"]

SWITCH_SIGMA = 1.0  # rad: below it the score takes the image sum, at and above it the cosine series
_IMAGES = 2  # Poisson images k = -2..2; omitted terms are below exp(-100) relative for σ < 1.
_L_MAX = 12  # cosine-series length; omitted terms are below exp(-80) relative for σ >= 1.
_OMEGA_FLOOR = 1e-7  # keeps 0/0 limits at ω = 0 finite (rad)
_TAIL_SIGMAS = 12.0  # tables stop at min(π, 12σ): the mass beyond is below exp(-72)


def _log_f_small(omega: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log f`` and ``d log f/dω`` by the image sum (σ < 1); float64 tensors broadcast together."""
    k = torch.arange(-_IMAGES, _IMAGES + 1, dtype=omega.dtype, device=omega.device)
    om = omega[..., None]
    s2 = (sigma * sigma)[..., None]
    shifted = om + 2.0 * math.pi * k
    # exp(-((ω+2πk)² - ω²)/(2σ²)) <= 1 for ω in [0, π]: the k = 0 Gaussian is factored out.
    e_k = torch.exp(-(4.0 * math.pi * k * om + 4.0 * math.pi**2 * k * k) / (2.0 * s2))
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    b = (sign * shifted * e_k).sum(-1)
    db = (sign * e_k * (1.0 - shifted * 4.0 * math.pi * k / (2.0 * s2))).sum(-1)
    log_f = (
        0.5 * math.log(2.0 * math.pi)
        + sigma * sigma / 8.0
        - 3.0 * torch.log(sigma)
        - omega * omega / (2.0 * sigma * sigma)
        + torch.log(b)
        - torch.log(torch.sin(0.5 * omega))
    )
    dlog_f = -omega / (sigma * sigma) + db / b - 0.5 / torch.tan(0.5 * omega)
    return log_f, dlog_f


def _log_f_large(omega: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log f`` and ``d log f/dω`` by the cosine series (σ >= 1); float64 tensors broadcast together."""
    l = torch.arange(_L_MAX + 1, dtype=omega.dtype, device=omega.device)
    weight = (2.0 * l + 1.0) * torch.exp(-l * (l + 1.0) * (sigma * sigma)[..., None] / 2.0)
    # χ_l(ω) = 1 + 2 Σ_{m=1..l} cos(mω), so f = C₀ + 2 Σ_m C_m cos(mω) with C_m = Σ_{l>=m} w_l.
    c = weight.flip(-1).cumsum(-1).flip(-1)
    m_omega = l * omega[..., None]
    f = c[..., 0] + 2.0 * (c[..., 1:] * torch.cos(m_omega[..., 1:])).sum(-1)
    df = -2.0 * (l[1:] * c[..., 1:] * torch.sin(m_omega[..., 1:])).sum(-1)
    return torch.log(f), df / f


def log_f_and_score(omega: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log f(ω; σ)`` (density w.r.t. Haar) and ``d log f/dω``, float64, differentiable.

    Parameters
    ----------
    omega
        Rotation angles ``[...]`` in rad, clamped to ``[1e-7, π]``.
    sigma
        Noise scales ``[...]`` (> 0), broadcast against ``omega``.
    """
    omega, sigma = torch.broadcast_tensors(omega.double(), torch.as_tensor(sigma, dtype=torch.float64))
    omega = omega.clamp(_OMEGA_FLOOR, math.pi)
    small = sigma < SWITCH_SIGMA
    # Each branch is evaluated only where it is used (cheaper, and no NaN from the other branch).
    log_f = torch.zeros_like(omega)
    dlog_f = torch.zeros_like(omega)
    if bool(small.any()):
        log_f[small], dlog_f[small] = _log_f_small(omega[small], sigma[small])
    if not bool(small.all()):
        large = ~small
        log_f[large], dlog_f[large] = _log_f_large(omega[large], sigma[large])
    return log_f, dlog_f


_IMAGE_CONSTANTS: dict[torch.device, tuple[torch.Tensor, ...]] = {}


def _image_constants(device: torch.device) -> tuple[torch.Tensor, ...]:
    """(2πk, −4πk, −4π²k², (−1)^k) for the images k = −2..2, float64 on ``device`` (built once)."""
    if device not in _IMAGE_CONSTANTS:
        with torch.inference_mode(False):  # constants made under inference mode could never enter autograd
            k = torch.arange(-_IMAGES, _IMAGES + 1, dtype=torch.float64, device=device)
            _IMAGE_CONSTANTS[device] = (2.0 * math.pi * k, -4.0 * math.pi * k, -4.0 * math.pi**2 * k * k,
                                        1.0 - 2.0 * torch.remainder(k, 2.0))
    return _IMAGE_CONSTANTS[device]


def angle_score(omega: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """``d log f/dω`` alone (what a score needs), float64, differentiable; equal to the second output of
    :func:`log_f_and_score`. A single σ below 1 (one sampler step) takes the image sum directly, in about a
    third of the operations.

    Parameters
    ----------
    omega
        Rotation angles ``[...]`` in rad, clamped to ``[1e-7, π]``.
    sigma
        Noise scales ``[...]`` (> 0) broadcast against ``omega``, or one scale.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=omega.device)
    if sigma.numel() != 1 or not float(sigma) < SWITCH_SIGMA:
        return log_f_and_score(omega, sigma)[1]
    two_pi_k, minus_four_pi_k, minus_four_pi2_k2, sign = _image_constants(omega.device)
    omega = omega.double().clamp(_OMEGA_FLOOR, math.pi)
    om = omega[..., None]
    inv_2s2 = 0.5 / (sigma * sigma).reshape(())
    # the terms of _log_f_small: e_k as there, b and db/dω over the images
    e_k = sign * torch.exp((minus_four_pi_k * om + minus_four_pi2_k2) * inv_2s2)
    shifted = om + two_pi_k
    b = (e_k * shifted).sum(-1)
    db = (e_k * (1.0 + shifted * minus_four_pi_k * inv_2s2)).sum(-1)
    return db / b - omega * (2.0 * inv_2s2) - 0.5 / torch.tan(0.5 * omega)


class IGSO3:
    """IGSO(3) with tables for sampling, built once (well under a second for the defaults).

    Parameters
    ----------
    sigma_min, sigma_max
        Range of the log-spaced σ grid of the tables. Below ``sigma_min`` sampling uses the small-σ
        limit (rotation vector ~ N(0, σ² I₃)); above ``sigma_max`` the law is uniform to < 1e-6 and the
        last row is used.
    num_sigma
        Number of σ grid points.
    num_omega
        Number of angle grid points per σ (on ``[0, min(π, 12σ)]``).
    """

    def __init__(
        self, sigma_min: float = 1e-3, sigma_max: float = 4.0, num_sigma: int = 256, num_omega: int = 1024
    ) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise StarMDError(f"IGSO3 needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.num_sigma = int(num_sigma)
        self.num_omega = int(num_omega)
        self._log_sigma = torch.linspace(
            math.log(sigma_min), math.log(sigma_max), num_sigma, dtype=torch.float64
        )
        sigma = self._log_sigma.exp()
        self._omega_max = torch.clamp(_TAIL_SIGMAS * sigma, max=math.pi)  # [S]
        frac = torch.linspace(0.0, 1.0, num_omega, dtype=torch.float64)
        omega = self._omega_max[:, None] * frac  # [S, M]
        log_f, dlog_f = log_f_and_score(omega, sigma[:, None])
        # (1 - cos ω)/π = 2 sin²(ω/2)/π, written so that it keeps its digits at small ω.
        pdf = torch.exp(log_f + 2.0 * torch.log(torch.sin(0.5 * omega)) + math.log(2.0 / math.pi))
        pdf[:, 0] = 0.0
        step = (self._omega_max / (num_omega - 1))[:, None]
        cells = 0.5 * (pdf[:, 1:] + pdf[:, :-1]) * step
        cdf = torch.cat([torch.zeros(num_sigma, 1, dtype=torch.float64), torch.cumsum(cells, 1)], dim=1)
        mass = cdf[:, -1:]
        cdf = cdf / mass
        # One sorted 1-D array for all rows (row r shifted by 2r) so searchsorted needs no per-sample copy.
        self._cdf_flat = (cdf + 2.0 * torch.arange(num_sigma, dtype=torch.float64)[:, None]).reshape(-1)
        sq = pdf * dlog_f**2
        score_sq = (0.5 * (sq[:, 1:] + sq[:, :-1]) * step).sum(1)
        self._log_score_norm = torch.log(score_sq / mass[:, 0])
        self._device_tables: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._device_tables:
            self._device_tables[device] = tuple(
                t.to(device) for t in (self._log_sigma, self._omega_max, self._cdf_flat, self._log_score_norm)
            )
        return self._device_tables[device]

    @staticmethod
    def _check_sigma(sigma: torch.Tensor) -> None:
        if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
            raise StarMDError("IGSO3 sigma must be finite and >= 0: check the noise schedule")

    def density(self, omega: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Density ``p(ω; σ)`` of the rotation angle on ``[0, π]`` (1/rad), float64 ``[...]``.

        Parameters
        ----------
        omega
            Angles ``[...]`` in rad.
        sigma
            Noise scales ``[...]`` (> 0), broadcast against ``omega``.
        """
        omega = torch.as_tensor(omega, dtype=torch.float64)
        log_f, _ = log_f_and_score(omega, sigma)
        return torch.exp(log_f) * 2.0 * torch.sin(0.5 * omega.clamp(0.0, math.pi)) ** 2 / math.pi

    def log_density(self, rotvec: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``log f`` of the rotations ``exp(rotvec)`` w.r.t. the uniform measure on SO(3), ``[...]``.

        Parameters
        ----------
        rotvec
            Rotation vectors ``[..., 3]`` (rad); differentiable.
        sigma
            Noise scales ``[...]``.
        """
        omega = torch.sqrt((rotvec.double() ** 2).sum(-1).clamp_min(_OMEGA_FLOOR**2))
        return log_f_and_score(omega, sigma)[0].to(rotvec.dtype)

    def sample_angle(self, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rotation angles ``[...]`` (rad) drawn by inverse CDF, one per element of ``sigma`` ``[...]``."""
        sigma = torch.as_tensor(sigma)
        self._check_sigma(sigma)
        device = sigma.device
        log_sigma_grid, omega_max, cdf_flat, _ = self._tables(device)
        gen_device = generator.device if generator is not None else device
        s = sigma.double()
        u = torch.rand(s.shape, generator=generator, dtype=torch.float64, device=gen_device).to(device)
        pos = (torch.log(s.clamp_min(self.sigma_min)) - log_sigma_grid[0]) / (
            log_sigma_grid[1] - log_sigma_grid[0]
        )
        pos = pos.clamp(0.0, self.num_sigma - 1.0)
        lower = pos.floor().long().clamp(max=self.num_sigma - 2)
        weight = pos - lower
        omega = (1.0 - weight) * self._invert_row(u, lower, omega_max, cdf_flat)
        omega = omega + weight * self._invert_row(u, lower + 1, omega_max, cdf_flat)
        # Below the grid: the small-σ limit, |N(0, σ² I₃)| (the 3-D Maxwell law); exact as σ -> 0.
        below = s < self.sigma_min
        if bool(below.any()):
            z = torch.randn((*s.shape, 3), generator=generator, dtype=torch.float64, device=gen_device)
            omega = torch.where(below, s * z.to(device).norm(dim=-1), omega)
        return omega.clamp(0.0, math.pi).to(sigma.dtype if sigma.is_floating_point() else torch.float32)

    def _invert_row(
        self, u: torch.Tensor, row: torch.Tensor, omega_max: torch.Tensor, cdf_flat: torch.Tensor
    ) -> torch.Tensor:
        M = self.num_omega
        target = u + 2.0 * row
        idx = torch.searchsorted(cdf_flat, target.reshape(-1)).reshape(u.shape)
        j = (idx - row * M).clamp(1, M - 1)
        c_hi = cdf_flat[row * M + j] - 2.0 * row
        c_lo = cdf_flat[row * M + j - 1] - 2.0 * row
        frac = ((u - c_lo) / (c_hi - c_lo).clamp_min(1e-300)).clamp(0.0, 1.0)
        return (j - 1 + frac) * omega_max[row] / (M - 1)

    def sample(self, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rotation vectors ``[..., 3]`` (rad) from IGSO(3)(σ), one per element of ``sigma`` ``[...]``.

        The angle comes from the tables, the axis is uniform on the sphere; the result has the dtype
        (float32 by default) and device of ``sigma``.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float32) if not torch.is_tensor(sigma) else sigma
        omega = self.sample_angle(sigma, generator)
        gen_device = generator.device if generator is not None else sigma.device
        axis = torch.randn((*sigma.shape, 3), generator=generator, dtype=omega.dtype, device=gen_device)
        axis = axis.to(sigma.device)
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return axis * omega[..., None]

    def score(self, rotvec: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """∇ log f at ``exp(rotvec)`` as a tangent vector ``[..., 3]`` (1/rad).

        For this class function the gradient is the same in the body and the space frame:
        ``(d log f/dω) · rotvec/|rotvec|``; it equals the gradient of :meth:`log_density` with respect
        to ``rotvec``. Result in the dtype of ``rotvec``.

        Parameters
        ----------
        rotvec
            Rotation vectors ``[..., 3]`` (rad), angle in ``[0, π]``.
        sigma
            Noise scales ``[...]`` (> 0).
        """
        v = rotvec.double()
        # Floor under the square root, not after it: keeps the gradient finite at rotvec = 0.
        omega = torch.sqrt((v * v).sum(-1).clamp_min(_OMEGA_FLOOR**2))
        dlog_f = angle_score(omega, sigma)
        return (dlog_f / omega)[..., None].mul(v).to(rotvec.dtype)

    def score_norm(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """``E |score|²`` under IGSO(3)(σ), ``[...]`` (1/rad²), for loss weighting.

        Interpolated in log σ from the tables; ``3/σ²`` (its small-σ limit) below ``sigma_min``.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        self._check_sigma(sigma)
        log_sigma_grid, _, _, log_norm = self._tables(sigma.device)
        s = sigma.double().clamp_min(1e-30)
        pos = ((torch.log(s) - log_sigma_grid[0]) / (log_sigma_grid[1] - log_sigma_grid[0])).clamp(
            0.0, self.num_sigma - 1.0
        )
        lower = pos.floor().long().clamp(max=self.num_sigma - 2)
        weight = pos - lower
        value = torch.exp((1.0 - weight) * log_norm[lower] + weight * log_norm[lower + 1])
        value = torch.where(s < self.sigma_min, 3.0 / (s * s), value)
        return value.to(sigma.dtype)
