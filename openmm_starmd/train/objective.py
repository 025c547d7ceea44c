"""Block-diffusion training objective: every frame t ≥ 1 of a K-frame window is a target in one pass.

The sequence holds the K clean history frames (context-noised with probability ``1 − ctx_clean_prob``)
and K−1 noisy copies of frames 1..K−1; under the block mask the noisy copy of frame t sees the clean
frames < t and itself. Frame 0 has no previous frame to be expressed against, so it is context only.
"""

from __future__ import annotations

import torch

from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.frames.protein import RESIDUE_NAMES, backbone_from_frames
from openmm_starmd.frames.rigid import superpose_chain
from openmm_starmd.model.chi import CHI_OFFSET, NUM_CHI, chi_loss
from openmm_starmd.model.network import StarMDNetwork, log_dt_tensor
from openmm_starmd.model.tokens import Residues, absolute, clean_inputs, noisy_inputs, perturb_frames, relative
from openmm_starmd.train.violations import backbone_violation

_GLYCINE = RESIDUE_NAMES.index("GLY")


def residues_from_batch(batch: dict[str, torch.Tensor]) -> Residues:
    """The static residue inputs of a collated batch (see :func:`collate_windows`)."""
    return Residues(batch["residue_type"].long(), batch["residue_index"].long(), batch["residue_mask"].bool(),
                    batch["chain_break"].bool())


def diffusion_loss(
    net: StarMDNetwork, diffusion: FrameDiffusion, batch: dict[str, torch.Tensor], generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch of windows and its parts.

    Parameters
    ----------
    batch
        Collated windows: ``rotations`` ``[B, K, N, 3, 3]``, ``translations`` ``[B, K, N, 3]`` nm,
        ``residue_*`` / ``chain_break`` ``[B, N]``, ``dt_ps`` ``[B]``; optional ``torsions`` ``[B, K, N, 7]``
        (rad) and ``torsion_mask`` ``[B, N, 7]`` for the χ head (χ1–χ4, cross-entropy, :mod:`openmm_starmd.model.chi`).
    generator
        Draws τ, the context noise and the diffusion noise (on the batch's device).

    Returns
    -------
    loss, parts
        Scalar loss and a dict of float parts (``rot``, ``trans``, ``backbone``, ``chi``, and ``violation``
        when ``violation_loss_weight`` is set).
    """
    cfg = net.config
    scale = cfg.translation_scale
    rot, trans = batch["rotations"], batch["translations"]
    B, K, N = trans.shape[:3]
    dev = trans.device
    res = residues_from_batch(batch)
    if cfg.align_history:
        with torch.no_grad():
            rot, trans = superpose_chain(rot, trans, res.residue_mask)
    # history (context) noise, per frame
    clean_draw = torch.rand(B, K, generator=generator, device=dev) < cfg.ctx_clean_prob
    tau_ctx = torch.rand(B, K, generator=generator, device=dev) * cfg.ctx_tau_max * (~clean_draw)
    c_rot, c_trans = perturb_frames(diffusion, rot, trans, tau_ctx, generator, scale)
    has_prev = (torch.arange(K, device=dev) > 0)[None].expand(B, K)
    prev_rot = torch.cat([c_rot[:, :1], c_rot[:, :-1]], 1)
    prev_trans = torch.cat([c_trans[:, :1], c_trans[:, :-1]], 1)
    f_clean = clean_inputs(res, c_rot, c_trans, prev_rot, prev_trans, has_prev, scale)
    # noisy targets t = 1..K-1 relative to the clean frame t-1
    ref_rot, ref_trans = rot[:, :-1], trans[:, :-1]
    rel_rot0, x0 = relative(ref_rot, ref_trans, rot[:, 1:], trans[:, 1:], scale)
    tau = cfg.tau_min + (1.0 - cfg.tau_min) * torch.rand(B, K - 1, generator=generator, device=dev)
    tau_n = tau[:, :, None].expand(B, K - 1, N)
    rel_rot_tau, omega = diffusion.so3.add_noise(rel_rot0, tau_n, generator)
    x_tau, _ = diffusion.r3.add_noise(x0, tau_n, generator)
    sig_rot, alpha, sig_tr = diffusion.sigmas(tau)
    f_noisy, n_rot, n_trans = noisy_inputs(res, ref_rot, ref_trans, rel_rot_tau, x_tau, scale, sig_rot)

    frames = torch.arange(K, device=dev)
    # bf16 autocast (GPU only) for the trunk; frames, losses and rotation maths stay float32.
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        h, _ = net.trunk(
            torch.cat([f_clean, f_noisy], 1), res.residue_type, res.residue_index, res.residue_mask,
            torch.cat([c_rot, n_rot], 1), torch.cat([c_trans, n_trans], 1), torch.cat([tau_ctx, tau], 1),
            log_dt_tensor(batch["dt_ps"], B, dev), torch.cat([frames, frames[1:]]),
            torch.cat([torch.zeros(K, dtype=torch.bool, device=dev), torch.ones(K - 1, dtype=torch.bool, device=dev)]),
            temperature_k=batch.get("temperature_k"),
        )
    h = h.float()
    pred_rot, pred_x, chi = net.heads(h[:, K:], rel_rot_tau, x_tau, sig_rot, alpha, sig_tr)

    mask = res.residue_mask[:, None, :].expand(B, K - 1, N).to(trans.dtype)
    denom = mask.sum().clamp_min(1.0)
    true_score = diffusion.so3.noise_score(omega, tau_n)
    pred_score = diffusion.so3.score(rel_rot_tau, pred_rot, tau_n)
    # σ²-weighted score matching (λ = σ², Song et al.): unit scale at every τ, and at small τ it
    # tends to the squared rotation error of the clean-frame prediction instead of a noise floor.
    weight = diffusion.so3.schedule.sigma(tau_n) ** 2 / 3.0
    rot_loss = (((pred_score - true_score) ** 2).sum(-1) * weight * mask).sum() / denom
    trans_loss = (((pred_x - x0) ** 2).sum(-1) * mask).sum() / denom
    # backbone atoms (N, CA, C, O) in global coordinates (O depends on the next residue), at small τ only
    small_frame = (tau < cfg.backbone_loss_tau_max).to(trans.dtype)  # [B, K-1]
    small = small_frame[:, :, None] * mask
    g_rot, g_trans = absolute(ref_rot, ref_trans, pred_rot, pred_x, scale)
    bb_pred = backbone_from_frames(g_rot.reshape(-1, N, 3, 3), g_trans.reshape(-1, N, 3))
    bb_true = backbone_from_frames(rot[:, 1:].reshape(-1, N, 3, 3), trans[:, 1:].reshape(-1, N, 3))
    bb_err = ((bb_pred - bb_true) * scale).pow(2).sum(-1).mean(-1).reshape(B, K - 1, N)
    bb_loss = (bb_err * small).sum() / small.sum().clamp_min(1.0)
    loss = cfg.rot_loss_weight * rot_loss + cfg.trans_loss_weight * trans_loss + cfg.backbone_loss_weight * bb_loss
    parts = {"rot": float(rot_loss.detach()), "trans": float(trans_loss.detach()), "backbone": float(bb_loss.detach())}
    if cfg.violation_loss_weight > 0:
        structure_mask = res.residue_mask[:, None].expand(B, K - 1, N).reshape(-1, N)
        structure_break = res.chain_break[:, None].expand(B, K - 1, N).reshape(-1, N)
        has_cb = (res.residue_type != _GLYCINE) & (res.residue_type < len(RESIDUE_NAMES))
        has_cb = has_cb[:, None].expand(B, K - 1, N).reshape(-1, N)
        violation = backbone_violation(bb_pred, structure_mask, structure_break, has_cb,
                                       neighbours=cfg.violation_neighbours).reshape(B, K - 1)
        violation = violation * scale**2
        violation = (violation * small_frame).sum() / small_frame.sum().clamp_min(1.0)
        loss = loss + cfg.violation_loss_weight * violation
        parts["violation"] = float(violation.detach())
    if chi is not None and "torsions" in batch:
        angles = batch["torsions"][:, 1:, :, CHI_OFFSET:CHI_OFFSET + NUM_CHI]
        tmask = batch["torsion_mask"][:, None, :, CHI_OFFSET:CHI_OFFSET + NUM_CHI].to(trans.dtype) * mask[..., None]
        side = chi_loss(chi, angles, tmask)
        loss = loss + cfg.chi_loss_weight * side
        parts["chi"] = float(side.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts
