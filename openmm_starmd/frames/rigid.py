"""Rigid-body maths on residue frames: the ONE place where rotations are handled.

Conventions (used throughout the package)
-----------------------------------------
* A rotation is a float32 tensor ``[..., 3, 3]`` acting on column vectors.
* A translation is a tensor ``[..., 3]`` in nm.
* A rigid transform is the pair ``(rot, trans)`` mapping local to global coordinates:
  ``x_global = rot @ x_local + trans``.
* A rotation vector (axis times angle, rad) is a tensor ``[..., 3]``; it is the tangent-space
  (Lie algebra) coordinate used by :func:`so3_exp` / :func:`so3_log`.
* A quaternion is ``[..., 4]`` scalar-first ``(w, x, y, z)``, unit norm, canonical sign ``w >= 0``.

Every function is batched over leading dimensions, torch only, differentiable where the
mathematics is (the small-angle branches use Taylor series so that gradients stay finite at 0).
"""

from __future__ import annotations

import torch

__all__ = [
    "apply",
    "apply_inverse",
    "compose",
    "frames_from_three_points",
    "geodesic_distance",
    "hat",
    "identity_rotations",
    "interpolate",
    "invert",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "random_rotations",
    "rotate_about_axis",
    "so3_exp",
    "so3_log",
    "superpose",
    "superpose_chain",
    "vee",
]

# Below this angle (rad) the closed forms lose precision in float32; Taylor series are exact to
# ~1e-10 there, well below float32 resolution.
_SMALL_ANGLE = 1e-2
_EPS = 1e-12


def identity_rotations(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Identity rotations of shape ``[*shape, 3, 3]``."""
    return torch.eye(3, dtype=dtype, device=device).expand(*shape, 3, 3).clone()


def compose(
    rot_a: torch.Tensor, trans_a: torch.Tensor, rot_b: torch.Tensor, trans_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The transform ``x -> a(b(x))``.

    Parameters
    ----------
    rot_a, rot_b
        Rotations ``[..., 3, 3]`` (broadcast against each other).
    trans_a, trans_b
        Translations ``[..., 3]`` in nm.

    Returns
    -------
    rot, trans
        ``rot_a @ rot_b`` ``[..., 3, 3]`` and ``rot_a @ trans_b + trans_a`` ``[..., 3]`` (nm).
    """
    rot = rot_a @ rot_b
    trans = torch.einsum("...ij,...j->...i", rot_a, trans_b) + trans_a
    return rot, trans


def invert(rot: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse transform: ``(rotᵀ, -rotᵀ trans)`` for ``rot`` ``[..., 3, 3]``, ``trans`` ``[..., 3]`` nm."""
    rot_t = rot.transpose(-1, -2)
    return rot_t, -torch.einsum("...ij,...j->...i", rot_t, trans)


def apply(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map local points to global: ``rot @ p + trans``.

    Parameters
    ----------
    rot
        ``[..., 3, 3]``; its batch dimensions broadcast against those of ``points`` (to apply one frame
        to several atoms, unsqueeze: ``apply(rot[..., None, :, :], trans[..., None, :], atoms)``).
    trans
        ``[..., 3]`` nm.
    points
        ``[..., 3]`` nm.
    """
    return torch.einsum("...ij,...j->...i", rot, points) + trans


def apply_inverse(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map global points into the frame: ``rotᵀ (p - trans)``; shapes as in :func:`apply`."""
    return torch.einsum("...ji,...j->...i", rot, points - trans)


def frames_from_three_points(
    n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone frames by Gram–Schmidt (AlphaFold convention).

    ``e1`` points along CA→C, ``e2`` lies in the N–CA–C plane on the side of N, ``e3 = e1 × e2``;
    the origin is CA.

    Parameters
    ----------
    n, ca, c
        Atom positions ``[..., 3]`` in nm.
    eps
        Floor on squared lengths (nm²) guarding the normalisations against coincident atoms.

    Returns
    -------
    rot, trans
        Rotation ``[..., 3, 3]`` with columns ``(e1, e2, e3)`` and translation ``ca`` ``[..., 3]`` nm.
    """
    # float64 so that the frame is orthonormal to float32 rounding (see so3_exp).
    dtype = ca.dtype
    v1 = (c - ca).double()
    v2 = (n - ca).double()
    e1 = v1 / torch.sqrt((v1 * v1).sum(-1, keepdim=True).clamp_min(eps))
    u2 = v2 - (e1 * v2).sum(-1, keepdim=True) * e1
    e2 = u2 / torch.sqrt((u2 * u2).sum(-1, keepdim=True).clamp_min(eps))
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-1).to(dtype), ca


def hat(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrix ``[..., 3, 3]`` with ``hat(v) @ x = v × x`` for ``v`` ``[..., 3]``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [
            torch.stack([zero, -z, y], dim=-1),
            torch.stack([z, zero, -x], dim=-1),
            torch.stack([-y, x, zero], dim=-1),
        ],
        dim=-2,
    )


def vee(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat`: the vector ``[..., 3]`` of the skew-symmetric part of ``m`` ``[..., 3, 3]``."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], dim=-1
    )


def so3_exp(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``[..., 3, 3]`` of rotation vectors ``[..., 3]`` (rad), by Rodrigues' formula.

    Evaluated in float64 and returned in the input dtype: float32 arithmetic alone leaves ``R Rᵀ - I``
    at ~1e-6, the float64 route at float32 rounding (~1e-7).
    """
    dtype = rotvec.dtype
    rotvec = rotvec.double()
    theta2 = (rotvec * rotvec).sum(-1)
    small = theta2 < _SMALL_ANGLE**2
    # Evaluate the closed form on a safe angle so that the unused branch never produces NaN gradients.
    theta_safe = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta_safe) / theta_safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta_safe)) / theta_safe**2)
    k = hat(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return (eye + a[..., None, None] * k + b[..., None, None] * (k @ k)).to(dtype)


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``[..., 4]`` ``(w, x, y, z)``, ``w >= 0``, of rotations ``[..., 3, 3]``.

    Uses the numerically largest of the four component formulas (Shepperd's method), so it is
    accurate for all angles including 180°.
    """
    r00, r11, r22 = rot[..., 0, 0], rot[..., 1, 1], rot[..., 2, 2]
    four_sq = torch.stack(
        [1.0 + r00 + r11 + r22, 1.0 + r00 - r11 - r22, 1.0 - r00 + r11 - r22, 1.0 - r00 - r11 + r22], dim=-1
    )
    two_abs = torch.sqrt(four_sq.clamp_min(_EPS))  # 2|w|, 2|x|, 2|y|, 2|z|
    d21 = rot[..., 2, 1] - rot[..., 1, 2]
    d02 = rot[..., 0, 2] - rot[..., 2, 0]
    d10 = rot[..., 1, 0] - rot[..., 0, 1]
    s01 = rot[..., 0, 1] + rot[..., 1, 0]
    s02 = rot[..., 0, 2] + rot[..., 2, 0]
    s12 = rot[..., 1, 2] + rot[..., 2, 1]
    # Row k holds 4 q_k q (all four components scaled by 4 q_k).
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], d21, d02, d10], dim=-1),
            torch.stack([d21, four_sq[..., 1], s01, s02], dim=-1),
            torch.stack([d02, s01, four_sq[..., 2], s12], dim=-1),
            torch.stack([d10, s02, s12, four_sq[..., 3]], dim=-1),
        ],
        dim=-2,
    ) / (2.0 * two_abs[..., :, None])
    best = four_sq.argmax(dim=-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    return quat / torch.linalg.norm(quat, dim=-1, keepdim=True)


def quaternion_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Rotation ``[..., 3, 3]`` of quaternions ``[..., 4]`` ``(w, x, y, z)`` (normalised here first).

    Evaluated in float64 (see :func:`so3_exp`) and returned in the input dtype.
    """
    dtype = quat.dtype
    q = quat.double()
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], dim=-1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], dim=-1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1),
        ],
        dim=-2,
    ).to(dtype)


def so3_log(rot: torch.Tensor) -> torch.Tensor:
    """Rotation vector ``[..., 3]`` (rad, angle in ``[0, π]``) of rotations ``[..., 3, 3]``.

    Goes through the quaternion, which stays accurate near 0 and near π (where ``acos`` of the
    trace would lose half the digits). At exactly π either of the two equivalent vectors is returned.
    """
    q = matrix_to_quaternion(rot)
    w, v = q[..., 0], q[..., 1:]
    sin_half2 = (v * v).sum(-1)
    small = sin_half2 < (0.5 * _SMALL_ANGLE) ** 2
    sin_half = torch.sqrt(torch.where(small, torch.ones_like(sin_half2), sin_half2))
    # angle / sin(angle/2) = 2 atan2(s, w) / s; Taylor for small s (w ~ 1): 2/w (1 - s²/(3 w²)).
    w_safe = torch.where(small, w, torch.ones_like(w))
    factor = torch.where(
        small,
        2.0 / w_safe * (1.0 - sin_half2 / (3.0 * w_safe * w_safe)),
        2.0 * torch.atan2(sin_half, w) / sin_half,
    )
    return factor[..., None] * v


def random_rotations(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Rotations ``[*shape, 3, 3]`` drawn uniformly (Haar measure) from normalised Gaussian quaternions."""
    if device is None and generator is not None:
        device = generator.device
    quat = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    return quaternion_to_matrix(quat)


def geodesic_distance(rot_a: torch.Tensor, rot_b: torch.Tensor) -> torch.Tensor:
    """Rotation angle (rad, in ``[0, π]``) of ``rot_aᵀ rot_b``; inputs ``[..., 3, 3]``, output ``[...]``.

    ``atan2(sin, cos)`` keeps full precision at small angles and near π, unlike ``acos`` of the trace.
    """
    rel = rot_a.transpose(-1, -2) @ rot_b
    cos = 0.5 * (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    s = vee(rel)
    sin = torch.sqrt((s * s).sum(-1) + _EPS * _EPS)
    return torch.atan2(sin, cos)


def interpolate(rot_a: torch.Tensor, rot_b: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation ``rot_a exp(s log(rot_aᵀ rot_b))``: ``rot_a`` at ``s=0``, ``rot_b`` at ``s=1``.

    Parameters
    ----------
    rot_a, rot_b
        Rotations ``[..., 3, 3]``.
    s
        Fraction, a float or a tensor ``[...]`` broadcasting against the batch dimensions.
    """
    rel = so3_log(rot_a.transpose(-1, -2) @ rot_b)
    s_t = torch.as_tensor(s, dtype=rel.dtype, device=rel.device)
    return rot_a @ so3_exp(s_t[..., None] * rel)


def rotate_about_axis(
    points: torch.Tensor, origin: torch.Tensor, axis: torch.Tensor, angle: torch.Tensor
) -> torch.Tensor:
    """Rotate points by ``angle`` about the line through ``origin`` along ``axis`` (right-handed).

    Parameters
    ----------
    points
        ``[..., 3]`` nm.
    origin
        ``[..., 3]`` nm, a point on the axis (broadcast against ``points``).
    axis
        ``[..., 3]`` direction of the axis, any non-zero length (normalised here).
    angle
        ``[...]`` rad; positive turns counter-clockwise looking down the axis towards ``origin``.

    Returns
    -------
    torch.Tensor
        ``[..., 3]`` nm, in the dtype of ``points`` (rotation built by :func:`so3_exp`).
    """
    unit = axis / torch.linalg.norm(axis, dim=-1, keepdim=True).clamp_min(_EPS)
    rot = so3_exp(unit * angle[..., None]).to(points.dtype)
    return apply(rot, origin, points - origin)



def superpose(
    mobile: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rigid transform that best maps ``mobile`` onto ``target`` (Kabsch, least squares, no reflection).

    Parameters
    ----------
    mobile, target
        Points ``[..., N, 3]`` nm.
    mask
        ``[..., N]`` bool, points that count (default all). With fewer than three, only the centroid is
        matched (the rotation is then undetermined and left as the identity).

    Returns
    -------
    rot, trans
        ``[..., 3, 3]`` and ``[..., 3]`` nm with ``target ≈ rot @ mobile + trans``.
    """
    if mask is None:
        mask = torch.ones(mobile.shape[:-1], dtype=torch.bool, device=mobile.device)
    w = mask.to(mobile.dtype)[..., None]
    count = w.sum(-2).clamp_min(1.0)
    c_mob = (mobile * w).sum(-2) / count
    c_tgt = (target * w).sum(-2) / count
    # Covariance in float64: the SVD of a 3x3 matrix is cheap and float32 loses digits for near-degenerate
    # (almost collinear) point sets.
    cov = torch.einsum("...ni,...nj->...ij", ((target - c_tgt[..., None, :]) * w).double(),
                       (mobile - c_mob[..., None, :]).double())
    u, _, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.det(u @ vt))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = (u @ fix @ vt).to(mobile.dtype)
    enough = (mask.sum(-1) >= 3)[..., None, None]
    rot = torch.where(enough, rot, torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(rot))
    trans = c_tgt - torch.einsum("...ij,...j->...i", rot, c_mob)
    return rot, trans


def superpose_chain(
    rot: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the overall rigid motion between consecutive frames of a trajectory of residue frames.

    Frame T−1 stays put; every earlier frame t is moved rigidly so that its frame origins (CA atoms) are
    superposed on those of the already moved frame t+1. The motion *within* the protein between any two
    consecutive frames is unchanged; their relative tumbling and drift are gone.

    Parameters
    ----------
    rot, trans
        Residue frames ``[..., T, N, 3, 3]`` and ``[..., T, N, 3]`` nm.
    mask
        ``[..., N]`` bool, residues used for the fit (default all).

    Returns
    -------
    rot, trans
        The moved frames, same shapes.
    """
    T = trans.shape[-3]
    rots, transs = [rot[..., T - 1, :, :, :]], [trans[..., T - 1, :, :]]
    for t in range(T - 2, -1, -1):
        g_rot, g_trans = superpose(trans[..., t, :, :], transs[-1], mask)
        rots.append(g_rot[..., None, :, :] @ rot[..., t, :, :, :])
        transs.append(apply(g_rot[..., None, :, :], g_trans[..., None, :], trans[..., t, :, :]))
    return torch.stack(rots[::-1], -4), torch.stack(transs[::-1], -3)
