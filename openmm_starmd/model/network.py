"""The STAR-MD network: invariant token embedding, blocks of (per-frame IPA → joint space-time
attention → MLP) with adaLN conditioning, and heads that predict the clean frame of noisy tokens.

Tokens are grouped by frame: every tensor of tokens is ``[B, F, N, C]`` where each of the F groups is
one frame (a clean history frame or a noisy target copy). Callers (training objective, rollout)
prepare groups with :func:`openmm_starmd.model.embeddings.token_features` and call :meth:`trunk`
then :meth:`heads`; :class:`KVCache` carries keys/values of clean frames between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from openmm_starmd.frames.rigid import so3_exp
from openmm_starmd.model.attention import (
    AttentionPlan,
    FrameGeometry,
    FrameIPA,
    SpaceTimeAttention,
    attention_plan,
    block_mask,
    frame_geometry,
)
from openmm_starmd.model.chi import NUM_CHI
from openmm_starmd.model.config import ModelConfig
from openmm_starmd.model.embeddings import NUM_TOKEN_FEATURES, FourierFeatures, Rotary2D

# Temperature enters the Fourier features as (T - 300 K) / 100 K: order one over 280-450 K.
_TEMPERATURE_CENTRE_K, _TEMPERATURE_SPAN_K = 300.0, 100.0


@dataclass
class KVCache:
    """Keys/values of clean history frames for every block, plus their frame indices.

    ``layers[l]`` is ``(k, v)`` each ``[B, H, F*N, d]``; ``frame_index`` is ``[F]`` long.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    frame_index: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return 0 if self.frame_index is None else int(self.frame_index.numel())

    def append(self, kvs: list[tuple[torch.Tensor, torch.Tensor]], frame_index: torch.Tensor, keep: int) -> None:
        """Add one or more frames' ``kvs`` (from :meth:`StarMDNetwork.trunk`) and keep the last ``keep``."""
        if self.frame_index is None:
            self.layers = list(kvs)
            self.frame_index = frame_index.clone()
        else:
            self.layers = [(torch.cat([k0, k1], 2), torch.cat([v0, v1], 2))
                           for (k0, v0), (k1, v1) in zip(self.layers, kvs, strict=True)]
            self.frame_index = torch.cat([self.frame_index, frame_index])
        excess = self.num_frames - keep
        if excess > 0:
            tokens_per_frame = self.layers[0][0].shape[2] // self.num_frames
            cut = excess * tokens_per_frame
            self.layers = [(k[:, :, cut:].contiguous(), v[:, :, cut:].contiguous()) for k, v in self.layers]
            self.frame_index = self.frame_index[excess:]


class Block(nn.Module):
    """adaLN-conditioned block: per-frame IPA, joint space-time attention, MLP (explicit sizes)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int, ipa_points: int, ipa_value_points: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(width, elementwise_affine=False) for _ in range(3)])
        self.ada = nn.Linear(width, 9 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.ipa = FrameIPA(width, num_heads, ipa_points, ipa_value_points)
        self.attn = SpaceTimeAttention(width, num_heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def modulations(self, cond_act: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift, 1 + scale, gate) of the IPA, attention and MLP branches, nine ``[B, F, 1, C]`` tensors, from
        the activated conditioning ``silu(cond)`` ``[B, F, C]``."""
        mods = list(self.ada(cond_act)[:, :, None].chunk(9, dim=-1))
        for i in (1, 4, 7):
            mods[i] = 1.0 + mods[i]
        return tuple(mods)

    def forward(
        self,
        h: torch.Tensor,
        mods: tuple[torch.Tensor, ...],
        geometry: FrameGeometry,
        rope: tuple[torch.Tensor, torch.Tensor],
        plan: AttentionPlan,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``h`` ``[B, F, N, C]``; ``mods`` from :meth:`modulations`; frames, rope and attention plan as
        prepared by :meth:`StarMDNetwork.prepare`."""
        B, F_, N, C = h.shape

        def modulate(x: torch.Tensor, i: int) -> torch.Tensor:
            return self.norms[i](x) * mods[3 * i + 1] + mods[3 * i]

        h = h + mods[2] * self.ipa(modulate(h, 0), geometry)
        upd, kv = self.attn(modulate(h, 1).reshape(B, F_ * N, C), rope[0], rope[1], plan, past)
        h = h + mods[5] * upd.view(B, F_, N, C)
        h = h + mods[8] * self.mlp(modulate(h, 2))
        return h, kv


@dataclass(frozen=True)
class TrunkContext:
    """The part of a trunk call that does not depend on the tokens' features, frames or diffusion time,
    prepared once by :meth:`StarMDNetwork.prepare` (in a rollout, once per draw for all its sampler steps).

    ``embed`` ``[B, 1, N, C]`` residue embedding; ``dt_feat`` ``[B, F, 2 nf]`` Δt features (zero for clean
    groups); ``cond_add`` ``[B, F, C]`` or ``[1, F, C]`` group-kind (and temperature) embedding; ``rope``
    rotary tables ``[B, 1, F*N, head_dim/2]``; ``plan`` the attention plan; ``past`` the cache's per-block
    keys/values or None; ``residue_mask`` ``[B, N]`` bool.
    """

    embed: torch.Tensor
    dt_feat: torch.Tensor
    cond_add: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]
    plan: AttentionPlan
    past: list[tuple[torch.Tensor, torch.Tensor]] | None
    residue_mask: torch.Tensor


class StarMDNetwork(nn.Module):
    """The causal space-time SE(3) denoiser. Build with ``StarMDNetwork(config)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        C, nf = config.width, config.num_fourier
        self.feature_proj = nn.Linear(NUM_TOKEN_FEATURES, C)
        self.residue_embed = nn.Embedding(config.num_residue_types, C)
        self.tau_fourier = FourierFeatures(nf, max_frequency=100.0)
        self.dt_fourier = FourierFeatures(nf, max_frequency=30.0)
        self.kind_embed = nn.Embedding(2, C)
        self.cond_mlp = nn.Sequential(nn.Linear(4 * nf, C), nn.SiLU(), nn.Linear(C, C))
        self.temperature_fourier = self.temperature_embed = None
        if config.temperature_condition:
            self.temperature_fourier = FourierFeatures(nf, max_frequency=30.0)
            self.temperature_embed = nn.Sequential(nn.Linear(2 * nf, C), nn.SiLU(), nn.Linear(C, C))
        self.rotary = Rotary2D(config.head_dim, config.residue_rope_base, config.time_rope_max_period)
        self.blocks = nn.ModuleList([
            Block(C, config.num_heads, config.mlp_ratio, config.ipa_points, config.ipa_value_points)
            for _ in range(config.num_blocks)
        ])
        self.final_norm = nn.LayerNorm(C, elementwise_affine=False)
        self.final_ada = nn.Linear(C, 2 * C)
        nn.init.zeros_(self.final_ada.weight)
        nn.init.zeros_(self.final_ada.bias)
        self.frame_head = nn.Linear(C, 6)
        nn.init.zeros_(self.frame_head.weight)
        nn.init.zeros_(self.frame_head.bias)
        self.chi_head = None
        if config.chi_head:  # zero start: uniform over bins, so a head added to a trained trunk starts neutral
            self.chi_head = nn.Linear(C, NUM_CHI * config.chi_bins)
            nn.init.zeros_(self.chi_head.weight)
            nn.init.zeros_(self.chi_head.bias)

    def trunk(
        self,
        features: torch.Tensor,
        residue_type: torch.Tensor,
        residue_index: torch.Tensor,
        residue_mask: torch.Tensor,
        rot: torch.Tensor,
        trans: torch.Tensor,
        tau: torch.Tensor,
        log_dt: torch.Tensor,
        frame_index: torch.Tensor,
        noisy: torch.Tensor,
        cache: KVCache | None = None,
        temperature_k: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run all blocks on F frame groups of tokens: :meth:`prepare`, :meth:`conditioning`, :meth:`run`.

        Parameters
        ----------
        features
            ``[B, F, N, NUM_TOKEN_FEATURES]`` from :func:`token_features`.
        residue_type, residue_index
            ``[B, N]`` long (types 0–19, 20 unknown).
        residue_mask
            ``[B, N]`` bool.
        rot, trans
            Global frames of the tokens ``[B, F, N, 3, 3]``, ``[B, F, N, 3]`` nm (for the IPA layer).
        tau
            Diffusion time of each group ``[B, F]`` (τ_ctx for clean groups).
        log_dt
            ``[B]`` natural log of the physical step in ps (used by noisy groups only).
        frame_index
            ``[F]`` long, frame number of each group.
        noisy
            ``[F]`` bool, group is a noisy target copy.
        cache
            Keys/values of earlier clean frames (read, not modified).
        temperature_k
            ``[B]`` or scalar temperature (K) of the dynamics to denoise (noisy groups only); used only with
            ``config.temperature_condition`` (None: 300 K).

        Returns
        -------
        h, kvs
            Final states ``[B, F, N, C]`` and per-block ``(k, v)`` of these tokens, to append to a cache.
        """
        ctx = self.prepare(residue_type, residue_index, residue_mask, log_dt, frame_index, noisy, cache,
                           temperature_k)
        return self.run(ctx, features, rot, trans, self.conditioning(ctx, tau))

    def prepare(
        self,
        residue_type: torch.Tensor,
        residue_index: torch.Tensor,
        residue_mask: torch.Tensor,
        log_dt: torch.Tensor,
        frame_index: torch.Tensor,
        noisy: torch.Tensor,
        cache: KVCache | None = None,
        temperature_k: torch.Tensor | float | None = None,
    ) -> TrunkContext:
        """The :class:`TrunkContext` of a trunk call (arguments as in :meth:`trunk`)."""
        B, N = residue_type.shape
        F_ = frame_index.numel()
        embed = self.residue_embed(residue_type)[:, None]
        dt_feat = self.dt_fourier(log_dt / 10.0)[:, None].expand(B, F_, -1) * noisy[None, :, None].to(embed.dtype)
        cond_add = self.kind_embed(noisy.long())[None]
        if self.temperature_embed is not None:
            temp = torch.as_tensor(_TEMPERATURE_CENTRE_K if temperature_k is None else temperature_k,
                                   dtype=torch.float32, device=embed.device).expand(B)
            t_feat = self.temperature_fourier((temp - _TEMPERATURE_CENTRE_K) / _TEMPERATURE_SPAN_K)
            cond_add = cond_add + self.temperature_embed(t_feat[:, None] * noisy[None, :, None].to(t_feat.dtype))
        tok_res = residue_index[:, None, :].expand(B, F_, N).reshape(B, F_ * N)
        tok_frame = frame_index[None, :, None].expand(B, F_, N).reshape(B, F_ * N)
        rope = self.rotary.angles(tok_res, tok_frame)
        has_past = cache is not None and cache.num_frames > 0
        past_frames = cache.frame_index if has_past else frame_index[:0]
        k_frames = torch.cat([past_frames, frame_index])
        k_noisy = torch.cat([torch.zeros_like(past_frames, dtype=torch.bool), noisy])
        groups = block_mask(frame_index, noisy, k_frames, k_noisy, self.config.window)
        plan = attention_plan(groups, residue_mask[:, None, :].expand(B, k_frames.numel(), N))
        return TrunkContext(embed, dt_feat, cond_add, rope, plan, cache.layers if has_past else None, residue_mask)

    def conditioning(self, ctx: TrunkContext, tau: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """adaLN modulations at diffusion time ``tau`` ``[B, F]``: one tuple per block
        (:meth:`Block.modulations`) and last the final layer's (shift, 1 + scale), each ``[B, F, 1, C]``."""
        cond = self.cond_mlp(torch.cat([self.tau_fourier(tau), ctx.dt_feat], -1)) + ctx.cond_add
        act = F.silu(cond)
        shift, scale = self.final_ada(act)[:, :, None].chunk(2, dim=-1)
        return [block.modulations(act) for block in self.blocks] + [(shift, 1.0 + scale)]

    def run(
        self, ctx: TrunkContext, features: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor,
        mods: list[tuple[torch.Tensor, ...]],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The blocks on tokens with ``features`` ``[B, F, N, NUM_TOKEN_FEATURES]`` and frames ``rot``
        ``[B, F, N, 3, 3]``, ``trans`` ``[B, F, N, 3]`` nm, modulated by ``mods`` (:meth:`conditioning`);
        returns what :meth:`trunk` returns."""
        h = self.feature_proj(features) + ctx.embed
        geometry = frame_geometry(rot, trans, ctx.residue_mask)
        kvs = []
        for i, block in enumerate(self.blocks):
            past = ctx.past[i] if ctx.past is not None else None
            h, kv = block(h, mods[i], geometry, ctx.rope, ctx.plan, past)
            kvs.append(kv)
        shift, scale = mods[-1]
        return self.final_norm(h) * scale + shift, kvs

    def heads(
        self, h: torch.Tensor, rel_rot_tau: torch.Tensor, x_tau: torch.Tensor, rot_sigma: torch.Tensor,
        alpha: torch.Tensor, trans_sigma: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Clean-frame prediction for noisy tokens, in the local axes of the previous clean frame.

        Parameters
        ----------
        h
            ``[B, F, N, C]`` trunk output of noisy groups.
        rel_rot_tau, x_tau
            Noisy relative rotation ``[B, F, N, 3, 3]`` and displacement ``[B, F, N, 3]`` (diffusion units).
        rot_sigma, alpha, trans_sigma
            ``[B, F]`` IGSO(3) σ (rad), VP α and VP σ at each group's τ.

        Returns
        -------
        rel_rot0, x0, chi_logits
            ``[B, F, N, 3, 3]``, ``[B, F, N, 3]`` (diffusion units), and χ1–χ4 logits
            ``[B, F, N, 4, chi_bins]`` (:mod:`openmm_starmd.model.chi`) or None.
        """
        B, F_, N, _ = h.shape
        out = self.frame_head(h)
        # Update the noisy rotation in its own frame, by at most ~σ: well conditioned at every τ.
        rel_rot0 = rel_rot_tau @ so3_exp(out[..., :3] * rot_sigma[:, :, None, None])
        # Posterior mean under a unit prior (α x_τ) plus a learned σ-scaled correction.
        x0 = alpha[:, :, None, None] * x_tau + trans_sigma[:, :, None, None] * out[..., 3:]
        chi = None
        if self.chi_head is not None:
            chi = self.chi_head(h).view(B, F_, N, NUM_CHI, self.config.chi_bins)
        return rel_rot0, x0, chi


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def log_dt_tensor(dt_ps: float | torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
    """``[B]`` natural log of Δt (ps) for a scalar or ``[B]`` Δt."""
    dt = torch.as_tensor(dt_ps, dtype=torch.float32, device=device)
    return torch.log(dt.expand(batch) if dt.dim() == 0 else dt)


__all__ = ["KVCache", "StarMDNetwork", "TrunkContext", "count_parameters", "log_dt_tensor"]
