"""The model's denoiser as the sampler calls it, the inference history noise, and the cache-free reference
sampler (:func:`sample_full_history`) that the cached :class:`~openmm_starmd.rollout.Rollout` is tested against.
"""

from __future__ import annotations

import torch

from openmm_starmd.diffusion.sampler import FrameDiffusion, sample_relative
from openmm_starmd.frames.rigid import superpose_chain
from openmm_starmd.model.network import KVCache, StarMDNetwork, log_dt_tensor
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


def make_denoiser(
    net: StarMDNetwork, diffusion: FrameDiffusion, res: Residues, ref_rot: torch.Tensor, ref_trans: torch.Tensor,
    dt_ps: float | torch.Tensor, index: torch.Tensor, cache: KVCache | None,
    clean: dict[str, torch.Tensor] | None = None, temperature_k: float | None = None,
):
    """Denoiser closure for :func:`sample_relative`: one noisy group per batch element (``ref_rot``
    ``[B, 1, N, 3, 3]``, ``ref_trans`` ``[B, 1, N, 3]`` nm, Δt scalar or ``[B]`` ps) at frame ``index``
    attending to the cache (or, with ``clean``, to recomputed history groups in the same call). The χ logits
    ``[B, 1, N, 4, bins]`` of its latest call (the last one of a draw: the clean prediction at the smallest τ)
    stay in ``denoise.chi_logits`` (None without a χ head)."""
    cfg = net.config
    scale = cfg.translation_scale
    B = ref_trans.shape[0]
    log_dt = log_dt_tensor(dt_ps, B, ref_trans.device)

    def denoise(rel_rot: torch.Tensor, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((B, 1), tau, device=x.device)
        sig_rot, alpha, sig_tr = diffusion.sigmas(t)
        feats, n_rot, n_trans = noisy_inputs(res, ref_rot, ref_trans, rel_rot, x, scale, sig_rot)
        noisy = torch.ones(1, dtype=torch.bool, device=x.device)
        if clean is None:
            h, _ = net.trunk(feats, res.residue_type, res.residue_index, res.residue_mask, n_rot, n_trans, t,
                             log_dt, index, noisy, cache, temperature_k)
        else:
            F = clean["features"].shape[1]
            h, _ = net.trunk(
                torch.cat([clean["features"], feats], 1), res.residue_type, res.residue_index, res.residue_mask,
                torch.cat([clean["rot"], n_rot], 1), torch.cat([clean["trans"], n_trans], 1),
                torch.cat([clean["tau"], t], 1), log_dt, torch.cat([clean["index"], index]),
                torch.cat([torch.zeros(F, dtype=torch.bool, device=x.device), noisy]), temperature_k=temperature_k,
            )
            h = h[:, F:]
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
