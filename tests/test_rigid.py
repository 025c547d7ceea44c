"""Exact and property tests of the rigid-body maths in openmm_starmd.frames.rigid."""

import math

import pytest
import torch

from openmm_starmd.frames import rigid


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_rotvecs(n: int, max_angle: float, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    axis = torch.randn(n, 3, generator=g)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(n, generator=g) * max_angle
    return axis * angle[:, None]


def test_exp_exact_cases():
    z90 = rigid.so3_exp(torch.tensor([0.0, 0.0, math.pi / 2]))
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(z90, expected, atol=1e-6)
    # x axis maps to y axis under +90° about z (column-vector convention).
    assert torch.allclose(z90 @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    x180 = rigid.so3_exp(torch.tensor([math.pi, 0.0, 0.0]))
    assert torch.allclose(x180, torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)
    assert torch.equal(rigid.so3_exp(torch.zeros(3)), torch.eye(3))
    assert torch.allclose(rigid.so3_log(torch.eye(3)), torch.zeros(3), atol=0)


def test_log_exact_cases():
    z90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(rigid.so3_log(z90), torch.tensor([0.0, 0.0, math.pi / 2]), atol=1e-6)
    for axis in range(3):
        r180 = -torch.eye(3)
        r180[axis, axis] = 1.0
        v = rigid.so3_log(r180)
        assert abs(float(v.norm()) - math.pi) < 1e-5
        assert abs(abs(float(v[axis])) - math.pi) < 1e-5
        assert torch.allclose(rigid.so3_exp(v), r180, atol=1e-6)


def test_exp_is_orthonormal():
    v = _random_rotvecs(2000, math.pi, seed=1)
    rot = rigid.so3_exp(v)
    eye = torch.eye(3).expand_as(rot)
    assert (rot @ rot.transpose(-1, -2) - eye).abs().max() < 1e-6
    assert (torch.linalg.det(rot) - 1.0).abs().max() < 1e-6
    haar = rigid.random_rotations((2000,), _gen(2))
    assert (haar @ haar.transpose(-1, -2) - eye).abs().max() < 1e-6
    assert (torch.linalg.det(haar) - 1.0).abs().max() < 1e-6


@pytest.mark.parametrize("max_angle", [1e-6, 1e-3, 0.1, 1.0, math.pi - 1e-3])
def test_log_exp_round_trip(max_angle):
    v = _random_rotvecs(2000, max_angle, seed=3)
    # Half of the samples exactly at the limit: near π is the hard case for log.
    v[::2] = v[::2] / v[::2].norm(dim=-1, keepdim=True) * max_angle
    back = rigid.so3_log(rigid.so3_exp(v))
    assert ((back - v).norm(dim=-1) <= 1e-6 * v.norm(dim=-1) + 1e-12).all()


def test_quaternion_round_trip_and_sign():
    rot = rigid.random_rotations((500,), _gen(5))
    q = rigid.matrix_to_quaternion(rot)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(q.norm(dim=-1), torch.ones(500), atol=1e-6)
    assert (rigid.quaternion_to_matrix(q) - rot).abs().max() < 2e-6
    # Rotation by angle θ about a has quaternion (cos θ/2, sin θ/2 a).
    q90 = rigid.matrix_to_quaternion(rigid.so3_exp(torch.tensor([0.0, math.pi / 2, 0.0])))
    c = math.cos(math.pi / 4)
    assert torch.allclose(q90, torch.tensor([c, 0.0, c, 0.0]), atol=1e-6)


def test_hat_vee():
    g = _gen(6)
    v = torch.randn(10, 3, generator=g)
    x = torch.randn(10, 3, generator=g)
    assert torch.allclose((rigid.hat(v) @ x[..., None])[..., 0], torch.linalg.cross(v, x), atol=1e-6)
    assert torch.allclose(rigid.vee(rigid.hat(v)), v)


def test_compose_invert_apply_round_trip():
    g = _gen(7)
    ra, rb = rigid.random_rotations((2, 20), g)
    ta, tb = torch.randn(2, 20, 3, generator=g)
    p = torch.randn(20, 3, generator=g)
    r, t = rigid.compose(ra, ta, rb, tb)
    assert torch.allclose(rigid.apply(r, t, p), rigid.apply(ra, ta, rigid.apply(rb, tb, p)), atol=1e-5)
    ri, ti = rigid.invert(r, t)
    r0, t0 = rigid.compose(r, t, ri, ti)
    assert (r0 - torch.eye(3)).abs().max() < 1e-5 and t0.abs().max() < 1e-5
    assert torch.allclose(rigid.apply_inverse(r, t, rigid.apply(r, t, p)), p, atol=1e-5)
    assert torch.allclose(rigid.apply(ri, ti, p), rigid.apply_inverse(r, t, p), atol=1e-5)


def test_frames_from_three_points():
    n = torch.tensor([-0.05, 0.14, 0.0])
    ca = torch.tensor([0.0, 0.0, 0.0])
    c = torch.tensor([0.15, 0.0, 0.0])
    rot, trans = rigid.frames_from_three_points(n, ca, c)
    # CA->C along x, N in the xy plane with positive y: the frame is the identity at the origin.
    assert torch.allclose(rot, torch.eye(3), atol=1e-6) and torch.equal(trans, ca)
    g = _gen(8)
    r = rigid.random_rotations((), g)
    t = torch.randn(3, generator=g)
    rot2, trans2 = rigid.frames_from_three_points(*(rigid.apply(r, t, x) for x in (n, ca, c)))
    assert torch.allclose(rot2, r, atol=1e-5) and torch.allclose(trans2, t, atol=1e-6)


def test_random_rotations_are_uniform_and_reproducible():
    a = rigid.random_rotations((20000,), _gen(9))
    assert torch.equal(a, rigid.random_rotations((20000,), _gen(9)))
    # Haar: E[R] = 0 and the angle has density (1 - cos ω)/π, so E[ω] = π/2 + 2/π.
    assert a.mean(0).abs().max() < 0.02
    angle = rigid.so3_log(a).norm(dim=-1)
    assert abs(float(angle.mean()) - (math.pi / 2 + 2 / math.pi)) < 0.02


def test_geodesic_distance_and_interpolate():
    g = _gen(10)
    ra = rigid.random_rotations((100,), g)
    v = _random_rotvecs(100, math.pi - 1e-3, seed=11)
    rb = ra @ rigid.so3_exp(v)
    assert torch.allclose(rigid.geodesic_distance(ra, rb), v.norm(dim=-1), atol=1e-4)
    assert rigid.geodesic_distance(ra, ra).abs().max() < 1e-5
    assert torch.allclose(rigid.interpolate(ra, rb, 0.0), ra, atol=1e-5)
    assert torch.allclose(rigid.interpolate(ra, rb, 1.0), rb, atol=1e-5)
    mid = rigid.interpolate(ra, rb, torch.full((100,), 0.25))
    assert torch.allclose(rigid.geodesic_distance(ra, mid), 0.25 * v.norm(dim=-1), atol=1e-4)
    assert torch.allclose(rigid.geodesic_distance(mid, rb), 0.75 * v.norm(dim=-1), atol=1e-4)


def test_exp_gradient_finite_at_zero():
    rigid._BASES.clear()
    with torch.inference_mode():  # constants first built by a rollout must still serve training
        rigid.so3_log(rigid.so3_exp(torch.ones(3)))
    v = torch.zeros(3, requires_grad=True)
    rigid.so3_exp(v).sum().backward()
    assert torch.isfinite(v.grad).all()
    # d/dv (R x) at 0 is -hat(x): check against the known linearisation.
    v = torch.zeros(3, requires_grad=True)
    x = torch.tensor([1.0, 2.0, 3.0])
    (rigid.so3_exp(v) @ x)[0].backward()
    assert torch.allclose(v.grad, torch.linalg.cross(x, torch.tensor([1.0, 0.0, 0.0])), atol=1e-6)


def test_log_gradient_at_identity_and_near_pi():
    for v0 in (torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 0.0, math.pi - 0.01], dtype=torch.float64)):
        v = v0.clone().requires_grad_(True)
        jac = torch.autograd.functional.jacobian(lambda x: rigid.so3_log(rigid.so3_exp(x)), v)
        assert torch.allclose(jac, torch.eye(3, dtype=torch.float64), atol=1e-6)


def test_superpose_recovers_rigid_motion_ignores_masked_points_and_never_reflects():
    g = _gen(5)
    mobile = torch.randn(2, 12, 3, generator=g)
    q = rigid.random_rotations((2,), g)
    shift = torch.randn(2, 3, generator=g)
    target = rigid.apply(q[:, None], shift[:, None], mobile)
    target[:, -2:] += 5.0  # outliers, masked out below
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, -2:] = False
    rot, trans = rigid.superpose(mobile, target, mask)
    assert torch.allclose(rot, q, atol=1e-5) and torch.allclose(trans, shift, atol=1e-5)
    # a mirror image is matched by the best proper rotation, not by the reflection
    rot, _ = rigid.superpose(mobile[0], -mobile[0])
    assert abs(float(torch.det(rot)) - 1.0) < 1e-5
    # too few points to fix a rotation: identity, centroids matched
    rot, trans = rigid.superpose(mobile[0, :2], target[0, :2])
    assert torch.allclose(rot, torch.eye(3)) and torch.allclose(trans, (target[0, :2] - mobile[0, :2]).mean(0))


def test_superpose_chain_removes_only_the_rigid_motion_between_frames():
    g = _gen(6)
    T, N = 5, 8
    base = torch.randn(N, 3, generator=g)
    wiggle = 0.05 * torch.randn(T, N, 3, generator=g)  # internal motion
    q = rigid.random_rotations((T,), g)  # tumbling
    shift = torch.randn(T, 3, generator=g)
    trans = rigid.apply(q[:, None], shift[:, None], base + wiggle)
    rot = q[:, None].expand(T, N, 3, 3) @ rigid.random_rotations((N,), g)
    a_rot, a_trans = rigid.superpose_chain(rot, trans)
    assert torch.equal(a_trans[-1], trans[-1]) and torch.equal(a_rot[-1], rot[-1])
    for t in range(T - 1):
        # consecutive frames now differ by (nearly) the internal motion alone ...
        step = (a_trans[t] - a_trans[t + 1]).norm(dim=-1).mean()
        assert float(step) < 0.15 < float((trans[t] - trans[t + 1]).norm(dim=-1).mean())
        # ... and each frame moved rigidly: distances and frame-relative geometry are unchanged
        assert torch.allclose(torch.cdist(a_trans[t], a_trans[t]), torch.cdist(trans[t], trans[t]), atol=1e-4)
        rel = rigid.apply_inverse(a_rot[t, :1], a_trans[t, :1], a_trans[t])
        assert torch.allclose(rel, rigid.apply_inverse(rot[t, :1], trans[t, :1], trans[t]), atol=1e-4)
