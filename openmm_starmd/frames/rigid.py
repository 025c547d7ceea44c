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
mathematics is (so3_exp and so3_log stay exact and differentiable at angle 0 without a branch).
"""

from __future__ import annotations

import math

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

_EPS = 1e-12

# Constant matrices of so3_exp and matrix_to_quaternion. _HAT maps v to the row-major [v]ₓ; _QUAT_MAP and
# _QUAT_OFFSET map the row-major entries r_ij of R to the 16 entries of 4 q qᵀ.
_HAT = torch.tensor([[0, 0, 0, 0, 0, -1, 0, 1, 0], [0, 0, 1, 0, 0, 0, -1, 0, 0], [0, -1, 0, 1, 0, 0, 0, 0, 0]],
                    dtype=torch.float64)
_EYE = torch.eye(3, dtype=torch.float64)


def _quaternion_map() -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.zeros(9, 4, 4, dtype=torch.float64)
    for k, signs in enumerate([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)]):  # 4 q_k² = 1 ± r00 ± r11 ± r22
        for j, sign in enumerate(signs):
            m[4 * j, k, k] = sign
    # off-diagonal 4 q_a q_b: (w,x) r21−r12, (w,y) r02−r20, (w,z) r10−r01, (x,y) r01+r10, (x,z) r02+r20, (y,z) r12+r21
    for (a, b), (i, j, sign) in [((0, 1), (7, 5, -1)), ((0, 2), (2, 6, -1)), ((0, 3), (3, 1, -1)),
                                 ((1, 2), (1, 3, 1)), ((1, 3), (2, 6, 1)), ((2, 3), (5, 7, 1))]:
        for entry, value in ((i, 1), (j, sign)):
            m[entry, a, b] = m[entry, b, a] = value
    return m.reshape(9, 16), torch.ones(4, dtype=torch.float64).diag().reshape(16)


_QUAT_MAP, _QUAT_OFFSET = _quaternion_map()
_BASES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _basis(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``constant`` in the dtype and on the device of ``like`` (converted once per process and kept)."""
    key = (id(constant), like.dtype, like.device)
    if key not in _BASES:
        with torch.inference_mode(False):  # a copy made under inference mode could never enter autograd
            _BASES[key] = constant.to(device=like.device, dtype=like.dtype, copy=True)
    return _BASES[key]


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
    return rot_a @ rot_b, _rotate(rot_a, trans_b) + trans_a


def invert(rot: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse transform: ``(rotᵀ, -rotᵀ trans)`` for ``rot`` ``[..., 3, 3]``, ``trans`` ``[..., 3]`` nm."""
    rot_t = rot.transpose(-1, -2)
    return rot_t, -_rotate(rot_t, trans)


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
    return _rotate(rot, points) + trans


def apply_inverse(rot: torch.Tensor, trans: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map global points into the frame: ``rotᵀ (p - trans)``; shapes as in :func:`apply`."""
    return _rotate(rot.transpose(-1, -2), points - trans)


def _rotate(rot: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """``rot @ vec`` for ``rot`` ``[..., 3, 3]`` and ``vec`` ``[..., 3]`` (broadcast). One batched matmul: on
    small tensors per-op overhead sets the cost, and ``einsum`` adds several ops around its matmul."""
    return (rot @ vec[..., None])[..., 0]


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
    v = rotvec.double()
    # R = cos θ I + (sin θ/θ) [v]ₓ + ((1 − cos θ)/θ²) v vᵀ, with both coefficients written through sinc
    # ((1 − cos θ)/θ² = ½ sinc²(θ/2π)), exact at every angle without a small-angle branch; the floor under
    # the square root keeps the gradient finite at θ = 0 and moves θ by at most 1e-15 rad.
    theta = torch.sqrt((v * v).sum(-1) + 1e-30)[..., None, None]
    half = torch.sinc(theta * (0.5 / math.pi))
    cross = (v @ _basis(_HAT, v)).unflatten(-1, (3, 3))
    outer = v[..., :, None] * v[..., None, :]
    eye = _basis(_EYE, v)
    rot = torch.cos(theta) * eye + torch.sinc(theta * (1.0 / math.pi)) * cross + 0.5 * half * half * outer
    return rot.to(dtype)


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``[..., 4]`` ``(w, x, y, z)``, ``w >= 0``, of rotations ``[..., 3, 3]``.

    Uses the numerically largest of the four component formulas (Shepperd's method), so it is
    accurate for all angles including 180°.
    """
    # Every entry of 4 q qᵀ is linear in the entries of R (one matmul gives all four candidate rows).
    outer4 = (rot.flatten(-2) @ _basis(_QUAT_MAP, rot) + _basis(_QUAT_OFFSET, rot)).unflatten(-1, (4, 4))
    four_sq = outer4.diagonal(dim1=-2, dim2=-1)  # 4w², 4x², 4y², 4z²
    best = four_sq.argmax(dim=-1, keepdim=True)
    row = torch.gather(outer4, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)  # 4 q_best q
    quat = row / (2.0 * torch.sqrt(torch.gather(four_sq, -1, best).clamp_min(_EPS)))
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
    w, v = q[..., :1], q[..., 1:]
    # angle / sin(angle/2) = 2 atan2(s, w) / s, accurate down to s = 0; the floor keeps the gradient finite
    # at the identity and changes s by at most 1e-15.
    sin_half = torch.sqrt((v * v).sum(-1, keepdim=True) + 1e-30)
    return (2.0 * torch.atan2(sin_half, w) / sin_half) * v


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
