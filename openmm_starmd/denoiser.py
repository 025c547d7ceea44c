"""The model's denoiser as the sampler calls it, the inference history noise, and the cache-free reference
sampler (:func:`sample_full_history`) that the cached :class:`~openmm_starmd.rollout.Rollout` is tested against.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from openmm_starmd.diffusion.sampler import FrameDiffusion, sample_relative
from openmm_starmd.frames.rigid import superpose_chain
from openmm_starmd.jit import frozen_trace
from openmm_starmd.model.network import KVCache, StarMDNetwork, TrunkContext, log_dt_tensor
from openmm_starmd.model.tokens import Residues, absolute, apply_frame_noise, clean_inputs, frame_noise, noisy_inputs


def context_noise(
    net: StarMDNetwork, diffusion: FrameDiffusion, rot: torch.Tensor, trans: torch.Tensor, frame_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference history noise of pushed frame ``frame_index`` (deterministic: seeded by the config seed
    and the frame number, so a resumed or recomputed run sees the same noise, and every replica at that
    frame the same draw). ``rot`` ``[..., N, 3, 3]``, ``trans`` ``[..., N, 3]`` nm."""
    cfg = net.config
    if cfg.ctx_tau_inference <= 0.0:
        return rot, trans
    gen = torch.Generator(device=trans.device).manual_seed(cfg.ctx_noise_seed * 1_000_003 + int(frame_index))
    tau = torch.full((1, 1), cfg.ctx_tau_inference, device=trans.device)
    omega, local = frame_noise(diffusion, tau, trans.shape[-2], gen, cfg.translation_scale, trans.dtype)
    return apply_frame_noise(rot, trans, omega[0, 0], local[0, 0])


class _Evaluation(nn.Module):
    """One network evaluation of a draw (noisy tokens → clean prediction) with the draw's structure fixed,
    in the positional-tensor form :func:`torch.jit.trace` records: ``(rel_rot, x, sig_rot, alpha, sig_tr,
    ref_rot, ref_trans, rope cos, rope sin, k_0, v_0, ..., modulations...)``."""

    def __init__(self, net: StarMDNetwork, res: Residues, ctx: TrunkContext, mod_sizes: list[int]) -> None:
        super().__init__()
        self.net, self.res, self.ctx, self.mod_sizes = net, res, ctx, mod_sizes
        self.num_past = 0 if ctx.past is None else len(ctx.past)

    def forward(self, *t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rel_rot, x, sig_rot, alpha, sig_tr, ref_rot, ref_trans, cos, sin = t[:9]
        rest = t[9:]
        past = [(rest[2 * i], rest[2 * i + 1]) for i in range(self.num_past)] or None
        flat = rest[2 * self.num_past:]
        mods, start = [], 0
        for n in self.mod_sizes:
            mods.append(tuple(flat[start:start + n]))
            start += n
        ctx = replace(self.ctx, rope=(cos, sin), past=past)
        scale = self.net.config.translation_scale
        feats, n_rot, n_trans = noisy_inputs(self.res, ref_rot, ref_trans, rel_rot, x, scale, sig_rot)
        h, _ = self.net.run(ctx, feats, n_rot, n_trans, mods)
        rot0, x0, chi = self.net.heads(h, rel_rot, x, sig_rot, alpha, sig_tr)
        return (rot0, x0) if chi is None else (rot0, x0, chi)


def make_denoiser(
    net: StarMDNetwork, diffusion: FrameDiffusion, res: Residues, ref_rot: torch.Tensor, ref_trans: torch.Tensor,
    dt_ps: float | torch.Tensor, index: torch.Tensor, cache: KVCache | None,
    clean: dict[str, torch.Tensor] | None = None, temperature_k: float | None = None,
    memo: dict[float, tuple] | None = None,
    traced: dict[tuple[int, int], torch.jit.ScriptModule | None] | None = None,
):
    """Denoiser closure for :func:`sample_relative`: one noisy group per batch element (``ref_rot``
    ``[B, 1, N, 3, 3]``, ``ref_trans`` ``[B, 1, N, 3]`` nm, Δt scalar or ``[B]`` ps) at frame ``index``
    attending to the cache (or, with ``clean``, to recomputed history groups in the same call). The χ logits
    ``[B, 1, N, 4, bins]`` of its latest call (the last one of a draw: the clean prediction at the smallest τ)
    stay in ``denoise.chi_logits`` (None without a χ head).

    Everything but the noisy tokens is prepared once (:meth:`StarMDNetwork.prepare`); what depends on τ alone
    (noise scales, adaLN modulations) is kept per τ in ``memo``, which a caller may pass to reuse across draws
    with the same batch size, Δt, temperature and weights (a rollout's sampler visits the same τ every draw).
    With ``traced`` (cache-attended draws only) each evaluation runs as a frozen TorchScript trace kept in that
    dict per (batch size, cached frames): the same numbers without Python's per-op overhead, which sets the
    cost of this small network on a CPU. A trace bakes in the weights and the residues, so the dict belongs to
    one rollout of one model.
    """
    cfg = net.config
    scale = cfg.translation_scale
    B = ref_trans.shape[0]
    device = ref_trans.device
    log_dt = log_dt_tensor(dt_ps, B, device)
    noisy = torch.ones(1, dtype=torch.bool, device=device)
    if clean is None:
        ctx = net.prepare(res.residue_type, res.residue_index, res.residue_mask, log_dt, index, noisy, cache,
                          temperature_k)
    else:
        F = clean["features"].shape[1]
        ctx = net.prepare(res.residue_type, res.residue_index, res.residue_mask, log_dt,
                          torch.cat([clean["index"], index]),
                          torch.cat([torch.zeros(F, dtype=torch.bool, device=device), noisy]), None, temperature_k)
    per_tau = {} if memo is None else memo

    def at_tau(tau: float) -> tuple:
        if tau not in per_tau:
            t = torch.full((B, 1), tau, device=device)
            groups_tau = t if clean is None else torch.cat([clean["tau"], t], 1)
            per_tau[tau] = (diffusion.sigmas(t), net.conditioning(ctx, groups_tau))
        return per_tau[tau]

    def denoise(rel_rot: torch.Tensor, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        (sig_rot, alpha, sig_tr), mods = at_tau(tau)
        if traced is not None and clean is None:
            inputs = [rel_rot, x, sig_rot, alpha, sig_tr, ref_rot, ref_trans, *ctx.rope]
            inputs += [t for kv in (ctx.past or []) for t in kv] + [m for group in mods for m in group]
            key = (B, 0 if cache is None else cache.num_frames)
            if key not in traced:
                traced[key] = frozen_trace(_Evaluation(net, res, ctx, [len(group) for group in mods]), inputs,
                                            "the network evaluation")
            if traced[key] is not None:
                out = traced[key](*inputs)
                denoise.chi_logits = out[2] if len(out) == 3 else None
                return out[0], out[1]
        feats, n_rot, n_trans = noisy_inputs(res, ref_rot, ref_trans, rel_rot, x, scale, sig_rot)
        if clean is None:
            h, _ = net.run(ctx, feats, n_rot, n_trans, mods)
        else:
            h, _ = net.run(ctx, torch.cat([clean["features"], feats], 1), torch.cat([clean["rot"], n_rot], 1),
                           torch.cat([clean["trans"], n_trans], 1), mods)
            h = h[:, clean["features"].shape[1]:]
        rot0, x0, denoise.chi_logits = net.heads(h, rel_rot, x, sig_rot, alpha, sig_tr)
        return rot0, x0

    denoise.chi_logits = None
    return denoise


@torch.no_grad()
def sample_full_history(
    model: StarMDNetwork, residues: Residues, rotations: torch.Tensor, translations: torch.Tensor, dt_ps: float,
    generator: torch.Generator, num_steps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next frame after a whole history, recomputed without a cache (every sampler step re-runs all
    T history frames). Same distribution and, for the same generator, the same draw as a :class:`Rollout`
    that pushed the same frames.

    Parameters
    ----------
    residues
        Batched (B = 1) residue inputs.
    rotations, translations
        History ``[T, N, 3, 3]`` and ``[T, N, 3]`` nm, oldest first.
    """
    cfg = model.config
    diffusion = FrameDiffusion(cfg)
    T = rotations.shape[0]
    if cfg.align_history:  # the last frame stays put, so the draw is already in the caller's coordinates
        rotations, translations = superpose_chain(rotations, translations, residues.residue_mask[0])
    noised = [context_noise(model, diffusion, rotations[t], translations[t], t) for t in range(T)]
    n_rot = torch.stack([r for r, _ in noised])[None]
    n_trans = torch.stack([t for _, t in noised])[None]
    prev_rot = torch.cat([n_rot[:, :1], n_rot[:, :-1]], 1)
    prev_trans = torch.cat([n_trans[:, :1], n_trans[:, :-1]], 1)
    has_prev = (torch.arange(T, device=n_rot.device) > 0)[None]
    clean = {
        "features": clean_inputs(residues, n_rot, n_trans, prev_rot, prev_trans, has_prev, cfg.translation_scale),
        "rot": n_rot, "trans": n_trans, "tau": torch.full((1, T), cfg.ctx_tau_inference, device=n_rot.device),
        "index": torch.arange(T, device=n_rot.device),
    }
    ref_rot, ref_trans = rotations[-1][None, None], translations[-1][None, None]
    index = torch.tensor([T], device=n_rot.device)
    denoise = make_denoiser(model, diffusion, residues, ref_rot, ref_trans, dt_ps, index, None, clean)
    N = rotations.shape[1]
    rel_rot, rel_x = sample_relative(denoise, (1, 1, N), diffusion, generator, n_rot.device, num_steps,
                                      cfg.deterministic_step(last=True))
    rot, trans = absolute(ref_rot, ref_trans, rel_rot, rel_x, cfg.translation_scale)
    return rot[0, 0], trans[0, 0]


__all__ = ["context_noise", "make_denoiser", "sample_full_history"]
