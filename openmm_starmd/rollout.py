"""Autoregressive rollout with a key/value cache: the interface the hybrid simulator calls.

``push`` appends a clean frame (its tokens' keys/values enter the cache, which keeps the last K
frames), ``sample`` draws the next frame without appending it. With ``config.align_history`` each pushed
frame is first superposed on the previous one (the model's "world" coordinates, as in training) and
samples are mapped back to the coordinates of the last pushed frame. Every jump therefore costs the same
however long the rollout. :func:`sample_full_history` recomputes the same distribution without a
cache from the whole history (the reference the cache is tested against).
"""

from __future__ import annotations

from typing import Any

import torch

from openmm_starmd.diffusion.sampler import FrameDiffusion, sample_relative
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.rigid import apply, identity_rotations, invert, superpose, superpose_chain
from openmm_starmd.model.network import KVCache, StarMDNetwork, log_dt_tensor
from openmm_starmd.model.tokens import Residues, absolute, clean_inputs, noisy_inputs, perturb_frames


def _residues(
    residue_type: Any, residue_index: Any, residue_mask: Any, chain_break: Any, device: torch.device
) -> Residues:
    if not torch.is_tensor(residue_type) and hasattr(residue_type, "residue_type"):
        feats = residue_type
        residue_type, residue_index = feats.residue_type, feats.residue_index
        residue_mask, chain_break = feats.residue_mask, feats.chain_break
    if residue_index is None or residue_mask is None or chain_break is None:
        raise StarMDError("Rollout needs residue_type, residue_index, residue_mask and chain_break (or a "
                          "features object with those attributes)")
    t = [torch.as_tensor(x, device=device) for x in (residue_type, residue_index, residue_mask, chain_break)]
    N = t[0].shape[-1]
    if any(x.shape != (N,) for x in t):
        raise StarMDError("residue_type, residue_index, residue_mask and chain_break must all be [N]")
    return Residues(t[0].long()[None], t[1].long()[None], t[2].bool()[None], t[3].bool()[None])


def _no_alignment(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity rigid transform (``[3, 3]``, ``[3]`` nm): before a second frame is pushed, world
    coordinates are the caller's."""
    return identity_rotations((), device=device), torch.zeros(3, device=device)


def context_noise(
    net: StarMDNetwork, diffusion: FrameDiffusion, rot: torch.Tensor, trans: torch.Tensor, frame_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference history noise of pushed frame ``frame_index`` (deterministic: seeded by the config seed
    and the frame number, so a resumed or recomputed run sees the same noise). ``rot`` ``[N, 3, 3]``,
    ``trans`` ``[N, 3]`` nm."""
    cfg = net.config
    if cfg.ctx_tau_inference <= 0.0:
        return rot, trans
    gen = torch.Generator(device=trans.device).manual_seed(cfg.ctx_noise_seed * 1_000_003 + int(frame_index))
    tau = torch.full((1, 1), cfg.ctx_tau_inference, device=trans.device)
    r, t = perturb_frames(diffusion, rot[None, None], trans[None, None], tau, gen, cfg.translation_scale)
    return r[0, 0], t[0, 0]


class Rollout:
    """Stateful STAR-MD sampler for one protein.

    Parameters
    ----------
    model
        A :class:`StarMDNetwork` (e.g. from :func:`openmm_starmd.model.checkpoint.load_model`).
    residue_type, residue_index, residue_mask, chain_break
        ``[N]`` tensors (types 0–19, 20 unknown; ``chain_break[i]`` True if residue i is not bonded to
        i−1), or a features object with these attributes as the first argument.
    window
        Number of history frames attended to (default: the model's K; at most K is sensible).
    num_steps
        Sampler steps per jump (default: the config's).
    temperature_k
        Temperature (K) of the dynamics to sample, for a temperature-conditioned model (None: 300 K).
    """

    def __init__(
        self, model: StarMDNetwork, residue_type: Any, residue_index: Any = None, residue_mask: Any = None,
        chain_break: Any = None, window: int | None = None, num_steps: int | None = None,
        temperature_k: float | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        self.residues = _residues(residue_type, residue_index, residue_mask, chain_break, self.device)
        self.window = self.config.window if window is None else int(window)
        if self.window < 1:
            raise StarMDError(f"window must be at least 1 frame, got {self.window}")
        self.num_steps = num_steps
        self.temperature_k = temperature_k
        self.diffusion = FrameDiffusion(self.config)
        self.cache = KVCache()
        self.count = 0  # frames pushed so far
        self._last: tuple[torch.Tensor, ...] | None = None  # clean and context-noised last frame (world)
        # rigid transform from the caller's coordinates of the last pushed frame to world coordinates
        self._align = _no_alignment(self.device)

    @property
    def num_residues(self) -> int:
        return int(self.residues.residue_type.shape[1])

    def _check_frame(self, rotations: torch.Tensor, translations: torch.Tensor) -> tuple[torch.Tensor, ...]:
        N = self.num_residues
        rot = torch.as_tensor(rotations, dtype=torch.float32, device=self.device)
        trans = torch.as_tensor(translations, dtype=torch.float32, device=self.device)
        if rot.shape != (N, 3, 3) or trans.shape != (N, 3):
            raise StarMDError(f"push expects rotations [{N},3,3] and translations [{N},3] nm, got "
                              f"{tuple(rot.shape)} and {tuple(trans.shape)}")
        if not bool(torch.isfinite(rot).all() and torch.isfinite(trans).all()):
            raise StarMDError("push got non-finite frames: check the structure passed to the rollout")
        return rot, trans

    @torch.no_grad()
    def push(self, rotations: torch.Tensor, translations: torch.Tensor) -> None:
        """Append a clean frame (``rotations`` ``[N, 3, 3]``, ``translations`` ``[N, 3]`` nm) to the history."""
        rot, trans = self._check_frame(rotations, translations)
        if self.config.align_history and self._last is not None:
            self._align = superpose(trans, self._last[1], self.residues.residue_mask[0])
            rot, trans = self._align[0] @ rot, apply(self._align[0], self._align[1], trans)
        n_rot, n_trans = context_noise(self.model, self.diffusion, rot, trans, self.count)
        if self._last is None:
            prev_rot, prev_trans, has_prev = n_rot, n_trans, False
        else:
            prev_rot, prev_trans, has_prev = self._last[2], self._last[3], True
        cfg = self.config
        feats = clean_inputs(self.residues, n_rot[None, None], n_trans[None, None], prev_rot[None, None],
                             prev_trans[None, None], torch.tensor([[has_prev]], device=self.device),
                             cfg.translation_scale)
        index = torch.tensor([self.count], device=self.device)
        tau = torch.full((1, 1), cfg.ctx_tau_inference, device=self.device)
        _, kvs = self.model.trunk(
            feats, self.residues.residue_type, self.residues.residue_index, self.residues.residue_mask,
            n_rot[None, None], n_trans[None, None], tau, torch.zeros(1, device=self.device), index,
            torch.zeros(1, dtype=torch.bool, device=self.device), self.cache,
        )
        self.cache.append(kvs, index, keep=self.window)
        self._last = (rot, trans, n_rot, n_trans)
        self.count += 1

    @torch.no_grad()
    def sample(self, dt_ps: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the next frame ``Δt = dt_ps`` after the last pushed one (not appended).

        Returns
        -------
        rotations, translations
            ``[N, 3, 3]`` and ``[N, 3]`` nm.
        """
        if self._last is None:
            raise StarMDError("Rollout.sample needs at least one pushed frame: call push(rotations, translations)")
        if not dt_ps > 0:
            raise StarMDError(f"dt_ps must be positive, got {dt_ps}")
        ref_rot, ref_trans = self._last[0][None, None], self._last[1][None, None]
        index = torch.tensor([self.count], device=self.device)
        denoise = _denoiser(self.model, self.diffusion, self.residues, ref_rot, ref_trans, dt_ps, index, self.cache,
                            temperature_k=self.temperature_k)
        rel_rot, rel_x = sample_relative(denoise, (1, 1, self.num_residues), self.diffusion, generator,
                                         self.device, self.num_steps)
        rot, trans = absolute(ref_rot, ref_trans, rel_rot, rel_x, self.config.translation_scale)
        back_rot, back_trans = invert(*self._align)
        return back_rot @ rot[0, 0], apply(back_rot, back_trans, trans[0, 0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """History (cache, last frame, frame count) as a flat dict of tensors (safetensors-friendly)."""
        state: dict[str, torch.Tensor] = {"count": torch.tensor(self.count), "window": torch.tensor(self.window)}
        if self._last is not None:
            for name, value in zip(("last_rot", "last_trans", "last_noisy_rot", "last_noisy_trans"), self._last,
                                   strict=True):
                state[name] = value.detach().cpu().clone()
            state["frame_index"] = self.cache.frame_index.cpu().clone()
            state["align_rot"], state["align_trans"] = (x.detach().cpu().clone() for x in self._align)
            for i, (k, v) in enumerate(self.cache.layers):
                state[f"cache_k_{i}"] = k.cpu().clone()
                state[f"cache_v_{i}"] = v.cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` so the rollout continues exactly."""
        self.count = int(state["count"])
        self.window = int(state["window"])
        self.cache = KVCache()
        self._last = None
        self._align = _no_alignment(self.device)
        if "last_rot" in state:
            if state["last_rot"].shape[0] != self.num_residues:
                raise StarMDError("rollout state is for a different number of residues: use the matching model/system")
            self._last = tuple(state[n].to(self.device) for n in
                               ("last_rot", "last_trans", "last_noisy_rot", "last_noisy_trans"))
            layers = [(state[f"cache_k_{i}"].to(self.device), state[f"cache_v_{i}"].to(self.device))
                      for i in range(self.config.num_blocks)]
            self.cache = KVCache(layers, state["frame_index"].to(self.device))
            if "align_rot" in state:
                self._align = (state["align_rot"].to(self.device), state["align_trans"].to(self.device))


def _denoiser(
    net: StarMDNetwork, diffusion: FrameDiffusion, res: Residues, ref_rot: torch.Tensor, ref_trans: torch.Tensor,
    dt_ps: float, index: torch.Tensor, cache: KVCache | None, clean: dict[str, torch.Tensor] | None = None,
    temperature_k: float | None = None,
):
    """Denoiser closure for :func:`sample_relative`: one noisy group at frame ``index`` attending to the
    cache (or, with ``clean``, to recomputed history groups in the same call)."""
    cfg = net.config
    scale = cfg.translation_scale
    log_dt = log_dt_tensor(dt_ps, 1, ref_trans.device)

    def denoise(rel_rot: torch.Tensor, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((1, 1), tau, device=x.device)
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
        rot0, x0, _ = net.heads(h, rel_rot, x, sig_rot, alpha, sig_tr)
        return rot0, x0

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
    has_prev = (torch.arange(T) > 0)[None].to(n_rot.device)
    clean = {
        "features": clean_inputs(residues, n_rot, n_trans, prev_rot, prev_trans, has_prev, cfg.translation_scale),
        "rot": n_rot, "trans": n_trans, "tau": torch.full((1, T), cfg.ctx_tau_inference, device=n_rot.device),
        "index": torch.arange(T, device=n_rot.device),
    }
    ref_rot, ref_trans = rotations[-1][None, None], translations[-1][None, None]
    index = torch.tensor([T], device=n_rot.device)
    denoise = _denoiser(model, diffusion, residues, ref_rot, ref_trans, dt_ps, index, None, clean)
    N = rotations.shape[1]
    rel_rot, rel_x = sample_relative(denoise, (1, 1, N), diffusion, generator, n_rot.device, num_steps)
    rot, trans = absolute(ref_rot, ref_trans, rel_rot, rel_x, cfg.translation_scale)
    return rot[0, 0], trans[0, 0]
