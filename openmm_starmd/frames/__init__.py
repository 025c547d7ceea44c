"""Residue frames: rigid-body maths (:mod:`.rigid`), the IGSO(3) distribution (:mod:`.igso3`) and the
backbone ⇄ frames conversion (:mod:`.protein`)."""

from openmm_starmd.frames.igso3 import IGSO3
from openmm_starmd.frames.rigid import (
    apply,
    apply_inverse,
    compose,
    frames_from_three_points,
    geodesic_distance,
    hat,
    identity_rotations,
    interpolate,
    invert,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_rotations,
    so3_exp,
    so3_log,
    superpose,
    superpose_chain,
    vee,
)

__all__ = [
    "IGSO3",
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
    "so3_exp",
    "so3_log",
    "superpose",
    "superpose_chain",
    "vee",
]
