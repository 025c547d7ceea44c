"""Attention layers: the per-frame geometric (IPA-style) layer and joint space-time attention.

Both go through :func:`torch.nn.functional.scaled_dot_product_attention`; no pair tensor is kept
between layers, so memory grows with the number of tokens (plus the transient score matrix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmm_starmd.frames.rigid import apply, apply_inverse
from openmm_starmd.model.embeddings import Rotary2D


@dataclass(frozen=True)
class FrameGeometry:
    """The frames every IPA layer of one trunk call reads, prepared once for all of them.

    ``rot`` ``[B, F, N, 1, 3, 3]`` and ``trans`` ``[B, F, N, 1, 3]`` nm (each frame centred on its residue
    mean); ``mask`` ``[B*F, 1, 1, N]`` bool over keys, or None when no residue is padding.
    """

    rot: torch.Tensor
    trans: torch.Tensor
    mask: torch.Tensor | None


def frame_geometry(rot: torch.Tensor, trans: torch.Tensor, residue_mask: torch.Tensor) -> FrameGeometry:
    """:class:`FrameGeometry` of frames ``rot`` ``[B, F, N, 3, 3]``, ``trans`` ``[B, F, N, 3]`` nm with
    ``residue_mask`` ``[B, N]`` bool (False: padding, never attended to)."""
    B, F_, N = trans.shape[:3]
    # Centre each frame on its residue mean: equivariant, and keeps the expanded distance exact.
    m = residue_mask[:, None, :, None].to(trans.dtype)
    centre = (trans * m).sum(2, keepdim=True) / m.sum(2, keepdim=True).clamp_min(1.0)
    mask = None
    if not bool(residue_mask.all()):
        mask = residue_mask[:, None, None, None, :].expand(B, F_, 1, 1, N).reshape(B * F_, 1, 1, N)
    return FrameGeometry(rot[:, :, :, None], (trans - centre)[:, :, :, None], mask)


class FrameIPA(nn.Module):
    """Invariant-point attention among the residues of one frame (no pair bias).

    Query/key/value points are produced in each residue's local frame, moved to the global frame and
    compared there, so the logits and the (back-to-local) outputs are invariant under a global rigid
    motion of the frame; the layer is therefore SE(3)-invariant and the network built on it equivariant.

    Parameters
    ----------
    width, num_heads, num_points, num_value_points
        Channel count C, heads H, query/key points and value points per head.
    """

    def __init__(self, width: int, num_heads: int, num_points: int, num_value_points: int) -> None:
        super().__init__()
        self.H, self.P, self.PV = num_heads, num_points, num_value_points
        self.d = width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.qk_points = nn.Linear(width, 2 * num_heads * num_points * 3)
        self.v_points = nn.Linear(width, num_heads * num_value_points * 3)
        # softplus(0.541) ≈ 1: point term starts with unit weight per head
        self.point_weight = nn.Parameter(torch.full((num_heads,), 0.541))
        self.out = nn.Linear(width + num_heads * num_value_points * 4, width)

    def forward(self, h: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
        """Update of ``h``.

        Parameters
        ----------
        h
            Token states ``[B, F, N, C]`` (F frames, attention within each frame only).
        geometry
            The tokens' residue frames (local → global) from :func:`frame_geometry`.
        """
        B, F_, N, _ = h.shape
        H, P, PV, d = self.H, self.P, self.PV, self.d
        rot_e, trans_e = geometry.rot, geometry.trans
        q, k, v = self.qkv(h).view(B, F_, N, 3, H, d).unbind(3)
        qk_pts = apply(rot_e, trans_e, self.qk_points(h).view(B, F_, N, 2 * H * P, 3)).view(B, F_, N, 2, H, P * 3)
        q_pts, k_pts = qk_pts.unbind(3)
        v_pts = apply(rot_e, trans_e, self.v_points(h).view(B, F_, N, H * PV, 3)).view(B, F_, N, H, PV * 3)
        # logit = w_s q·k − γ/2 |Q − K|²; the |Q|² term is constant per query and drops out of softmax.
        gamma = F.softplus(self.point_weight) * math.sqrt(2.0 / (9.0 * P))
        w_s = math.sqrt(1.0 / (2.0 * d))
        g = gamma[:, None]
        ones = torch.ones_like(q[..., :1])
        q_aug = torch.cat([w_s * q, g * q_pts, ones], dim=-1)
        k_aug = torch.cat([k, k_pts, -0.5 * g * (k_pts * k_pts).sum(-1, keepdim=True)], dim=-1)
        v_aug = torch.cat([v, v_pts], dim=-1)

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, F, N, H, X] -> [B*F, H, N, X]
            return x.reshape(B * F_, N, H, -1).transpose(1, 2)

        # Written out rather than through scaled_dot_product_attention: values are narrower than keys here,
        # which sends SDPA to its general path, several times slower than these four ops on small frames.
        logits = heads(q_aug) @ heads(k_aug).transpose(-1, -2)
        if geometry.mask is not None:
            logits = logits.masked_fill(~geometry.mask, float("-inf"))
        o = torch.softmax(logits, dim=-1) @ heads(v_aug)
        o = o.transpose(1, 2).reshape(B, F_, N, H, d + PV * 3)
        o_scalar = o[..., :d].reshape(B, F_, N, H * d)
        o_pts = apply_inverse(rot_e, trans_e, o[..., d:].reshape(B, F_, N, H * PV, 3))
        o_norm = torch.sqrt((o_pts * o_pts).sum(-1) + 1e-8)
        feats = torch.cat([o_scalar, o_pts.reshape(B, F_, N, -1), o_norm], dim=-1)
        return self.out(feats)


def block_mask(
    q_frame: torch.Tensor, q_noisy: torch.Tensor, k_frame: torch.Tensor, k_noisy: torch.Tensor, window: int
) -> torch.Tensor:
    """Which frame groups may attend to which, ``[Fq, Fk]`` bool.

    A clean frame t sees clean frames ``t−K < s ≤ t``; a noisy (target) frame t sees clean frames
    ``t−K ≤ s < t`` and its own noisy group; clean tokens never see noisy ones. Inside a K-frame
    training window this is the block-causal mask; in a rollout it is the sliding window of the cache.

    Parameters
    ----------
    q_frame, k_frame
        Frame indices ``[Fq]`` and ``[Fk]`` (long).
    q_noisy, k_noisy
        ``[Fq]``, ``[Fk]`` bool: group is a noisy target copy.
    window
        K, number of clean frames a token can see.
    """
    dt = q_frame[:, None] - k_frame[None, :]
    qn, kn = q_noisy[:, None], k_noisy[None, :]
    clean_clean = ~qn & ~kn & (dt >= 0) & (dt < window)
    noisy_clean = qn & ~kn & (dt >= 1) & (dt <= window)
    noisy_self = qn & kn & (dt == 0)
    return clean_clean | noisy_clean | noisy_self


@dataclass(frozen=True)
class AttentionPlan:
    """Which keys each query frame group reads, worked out once per trunk call for every block.

    ``keys[g]``: indices ``[S]`` of the key groups query group g sees, or None when it sees all of them in
    order; ``masks[g]``: ``[B, 1, 1, S*N]`` bool over those keys, or None when no residue is padding.
    """

    keys: list[torch.Tensor | None]
    masks: list[torch.Tensor | None]


def attention_plan(groups: torch.Tensor, key_mask: torch.Tensor) -> AttentionPlan:
    """:class:`AttentionPlan` from ``groups`` ``[Fq, Fk]`` (:func:`block_mask`) and ``key_mask``
    ``[B, Fk, N]`` bool (False for padding residues)."""
    B = key_mask.shape[0]
    padded = not bool(key_mask.all())
    keys, masks = [], []
    for row in groups:
        sel = None if bool(row.all()) else torch.nonzero(row).squeeze(1)
        keys.append(sel)
        chosen = key_mask if sel is None else key_mask.index_select(1, sel)
        masks.append(chosen.reshape(B, 1, 1, -1) if padded else None)
    return AttentionPlan(keys, masks)


class SpaceTimeAttention(nn.Module):
    """Joint attention over all (frame, residue) tokens with a block mask, 2-D rotary positions and a
    key/value cache interface.

    Parameters
    ----------
    width, num_heads
        C and H.
    rotary
        Shared :class:`Rotary2D`.
    """

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.H, self.d = num_heads, width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = nn.LayerNorm(self.d)
        self.k_norm = nn.LayerNorm(self.d)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        plan: AttentionPlan,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend and return ``(update [B, L, C], (k, v))`` where ``k, v`` ``[B, H, L, d]`` are this call's
        keys (rotary applied) and values, for the cache.

        Each query frame group attends, in one SDPA call, to the key groups it may see; no token-level
        L×L mask is built, so memory grows with the number of tokens times the window, not (N T)².

        Parameters
        ----------
        h
            Token states ``[B, L, C]`` with ``L = Fq * N`` (frame groups of N tokens).
        cos, sin
            Rotary tables ``[B, 1, L, d/2]`` of these tokens.
        plan
            :func:`attention_plan` over (past groups, own groups), Fq query groups.
        past
            Cached ``(k, v)`` ``[B, H, Fp * N, d]`` or None.
        """
        B, L, C = h.shape
        Fq = len(plan.keys)
        N = L // Fq
        H, d = self.H, self.d
        q, k, v = self.qkv(h).view(B, L, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)
        q = Rotary2D.rotate(self.q_norm(q), cos, sin)
        k = Rotary2D.rotate(self.k_norm(k), cos, sin)
        k_all, v_all = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        q5 = q.view(B, H, Fq, N, d)
        k5, v5 = k_all.view(B, H, -1, N, d), v_all.view(B, H, -1, N, d)
        outs = []
        for g, (sel, mask) in enumerate(zip(plan.keys, plan.masks, strict=True)):
            ks, vs = k_all, v_all
            if sel is not None:
                ks = k5.index_select(2, sel).reshape(B, H, -1, d)
                vs = v5.index_select(2, sel).reshape(B, H, -1, d)
            outs.append(F.scaled_dot_product_attention(q5[:, :, g], ks, vs, attn_mask=mask))
        o = outs[0] if Fq == 1 else torch.stack(outs, 2).reshape(B, H, L, d)
        return self.out(o.transpose(1, 2).reshape(B, L, C)), (k, v)
