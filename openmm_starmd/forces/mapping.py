"""Frame scores (translation 1/nm, body rotation 1/rad) to forces on N, CA, C (see the package docstring)."""

from __future__ import annotations

import torch

__all__ = ["frame_score_forces"]


def frame_score_forces(
    n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor, rot_score: torch.Tensor, trans_score: torch.Tensor,
    kt: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forces on N, CA, C whose virtual work equals ``kT (trans_score·δCA + rot_score·δω)``.

    Parameters
    ----------
    n, ca, c
        Atom positions ``[..., 3]`` nm.
    rot_score
        ``[..., 3]`` 1/rad, gradient of log p with respect to a body-frame rotation vector of the frame
        built by :func:`~openmm_starmd.frames.rigid.frames_from_three_points`.
    trans_score
        ``[..., 3]`` 1/nm, gradient of log p with respect to the frame origin (CA), global axes.
    kt
        Thermal energy, kJ/mol.

    Returns
    -------
    f_n, f_ca, f_c
        ``[..., 3]`` kJ/mol/nm (the formulas are in the module docstring).
    """
    dtype = ca.dtype
    v1 = (c - ca).double()
    v2 = (n - ca).double()
    len1 = torch.sqrt((v1 * v1).sum(-1, keepdim=True).clamp_min(1e-8))
    e1 = v1 / len1
    a = (e1 * v2).sum(-1, keepdim=True)
    u2 = v2 - a * e1
    len2 = torch.sqrt((u2 * u2).sum(-1, keepdim=True).clamp_min(1e-8))
    e2 = u2 / len2
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    s = rot_score.double() * kt
    f_n = s[..., 0:1] * e3 / len2
    f_c = (s[..., 2:3] * e2 - s[..., 1:2] * e3 - s[..., 0:1] * (a / len2) * e3) / len1
    f_ca = trans_score.double() * kt - f_n - f_c
    return f_n.to(dtype), f_ca.to(dtype), f_c.to(dtype)
