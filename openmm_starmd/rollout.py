"""Autoregressive rollout with a key/value cache: the interface the hybrid simulator calls.

``push`` appends a clean frame (its tokens' keys/values enter the cache, which keeps the last K
frames), ``sample`` draws the next frame without appending it. With ``config.align_history`` each pushed
frame is first superposed on the previous one (the model's "world" coordinates, as in training) and
samples are mapped back to the coordinates of the last pushed frame. Every jump therefore costs the same
however long the rollout. :func:`~openmm_starmd.denoiser.sample_full_history` recomputes the same
distribution without a cache from the whole history (the reference the cache is tested against).

A Δt longer than ``max_step_ps`` is drawn as k equal model steps; the k − 1 intermediate frames join
the history only when the caller pushes the next frame (its accepted version of the last step), so a
rejected draw leaves the history as it was and the history keeps one spacing, Δt / k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from openmm_starmd.denoiser import context_noise, make_denoiser
from openmm_starmd.diffusion.sampler import FrameDiffusion, sample_relative
from openmm_starmd.errors import StarMDError
from openmm_starmd.frames.rigid import apply, invert, superpose
from openmm_starmd.history import History, empty_history, fork, history_state, load_history
from openmm_starmd.model.chi import draw_chi
from openmm_starmd.model.network import KVCache, StarMDNetwork
from openmm_starmd.model.tokens import Residues, absolute, clean_inputs


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


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":  # "cuda" means the current device
        current = torch.cuda.current_device()
        return (current if a.index is None else a.index) == (current if b.index is None else b.index)
    return a.index == b.index or a.index is None or b.index is None


class Rollout:
    """Stateful STAR-MD sampler for one protein, optionally for R independent replicas of it at once.

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
    replicas
        None: one trajectory, frames are ``[N, ...]``. R: R independent trajectories, frames are
        ``[R', N, ...]`` for the R' replicas named by ``replicas=`` in :meth:`push`/:meth:`sample`
        (default all R); replicas with the same number of pushed frames share one forward pass per step.
    temperature_k
        Temperature (K) of the dynamics to sample, for a temperature-conditioned model (None: 300 K).
    max_step_ps
        Longest Δt (ps) of one model step; a longer Δt is drawn as equal steps (default: the config's,
        which applies only to chains of at most ``max_step_residues`` residues when that is set; 0: always
        one step).
    traced
        Once the history fills the window, run each network evaluation as a frozen TorchScript trace (one per
        number of replicas drawn together, ~0.4 s to build on a CPU): the same draws in about half the time per
        evaluation on a CPU. Traces bake in the weights: a rollout assumes its model does not change.
    """

    def __init__(
        self, model: StarMDNetwork, residue_type: Any, residue_index: Any = None, residue_mask: Any = None,
        chain_break: Any = None, window: int | None = None, num_steps: int | None = None,
        replicas: int | None = None, temperature_k: float | None = None, max_step_ps: float | None = None,
        traced: bool = True,
    ) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        self.residues = _residues(residue_type, residue_index, residue_mask, chain_break, self.device)
        self.window = self.config.window if window is None else int(window)
        if self.window < 1:
            raise StarMDError(f"window must be at least 1 frame, got {self.window}")
        if replicas is not None and int(replicas) < 1:
            raise StarMDError(f"replicas must be at least 1, got {replicas}")
        self.replicas = None if replicas is None else int(replicas)
        if num_steps is not None:  # checked now, applied per model step (see _sampler)
            self.config.replace(num_sampler_steps=int(num_steps))
        self.num_steps = num_steps
        self.temperature_k = temperature_k
        # an override goes through the config's own validation
        steps_from = self.config if max_step_ps is None else self.config.replace(max_step_ps=float(max_step_ps))
        self.max_step_ps = steps_from.max_step_ps
        longest = self.config.max_step_residues
        if max_step_ps is None and longest and int(self.residues.residue_mask.sum()) > longest:
            self.max_step_ps = 0.0
        self.diffusion = FrameDiffusion(self.config)
        self._batched: dict[int, Residues] = {}
        # (replicas drawn together, their Δt, temperature) -> τ -> noise scales and adaLN modulations: the sampler
        # visits the same τ grid every draw, and neither depends on the history (weights are fixed while rolling out)
        self._per_tau: dict[tuple, dict[float, tuple]] = {}
        self.traced = bool(traced)
        self._traced: dict[tuple[int, int], torch.jit.ScriptModule | None] = {}
        self._hist = [self._empty() for _ in range(self.replicas or 1)]
        # replica -> its history with the intermediate frames of its last multi-step draw (see push)
        self._pending: dict[int, History] = {}
        self.last_chi: torch.Tensor | None = None

    def _empty(self) -> History:
        return empty_history(self.device)

    @property
    def num_residues(self) -> int:
        return int(self.residues.residue_type.shape[1])

    @property
    def cache(self) -> KVCache:
        """Key/value cache of replica 0 (the only one without ``replicas``)."""
        return self._hist[0].cache

    @property
    def count(self) -> int:
        """Frames pushed so far (replica 0; see :attr:`counts`)."""
        return self._hist[0].count

    @property
    def counts(self) -> list[int]:
        """Frames pushed so far, per replica."""
        return [h.count for h in self._hist]

    def _residues_for(self, G: int) -> Residues:
        if G not in self._batched:
            r = self.residues
            self._batched[G] = Residues(*(x.expand(G, -1) for x in
                                          (r.residue_type, r.residue_index, r.residue_mask, r.chain_break)))
        return self._batched[G]

    def _indices(self, replicas: Sequence[int] | None, what: str) -> list[int]:
        if self.replicas is None:
            if replicas is not None:
                raise StarMDError(f"{what}(replicas=...) needs a Rollout built with replicas=R")
            return [0]
        idx = list(range(self.replicas)) if replicas is None else [int(k) for k in replicas]
        if not idx or len(set(idx)) != len(idx) or not all(0 <= k < self.replicas for k in idx):
            raise StarMDError(f"{what}: replicas must be distinct indices in 0..{self.replicas - 1}, got {replicas}")
        return idx

    def _check_frames(self, rotations: torch.Tensor, translations: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        N = self.num_residues
        rot = torch.as_tensor(rotations, dtype=torch.float32, device=self.device)
        trans = torch.as_tensor(translations, dtype=torch.float32, device=self.device)
        lead = () if self.replicas is None else (n,)
        if rot.shape != (*lead, N, 3, 3) or trans.shape != (*lead, N, 3):
            want = "" if self.replicas is None else f"{n},"
            raise StarMDError(f"push expects rotations [{want}{N},3,3] and translations [{want}{N},3] nm, got "
                              f"{tuple(rot.shape)} and {tuple(trans.shape)}")
        if not bool(torch.isfinite(rot).all() and torch.isfinite(trans).all()):
            raise StarMDError("push got non-finite frames: check the structure passed to the rollout")
        return (rot[None], trans[None]) if self.replicas is None else (rot, trans)

    def _groups(self, idx: list[int], tags: list[Any] | None = None) -> list[tuple[tuple[int, Any], list[int]]]:
        """Positions in ``idx`` grouped by history length and, if given, by ``tags[p]`` (one forward pass per
        group): ``[((count, tag), positions), ...]``."""
        groups: dict[tuple[int, Any], list[int]] = {}
        for p, k in enumerate(idx):
            groups.setdefault((self._hist[k].count, None if tags is None else tags[p]), []).append(p)
        return sorted(groups.items())

    def _stacked_cache(self, hs: list[History]) -> KVCache:
        if hs[0].cache.num_frames == 0 or len(hs) == 1:
            return hs[0].cache
        layers = [(torch.cat([h.cache.layers[i][0] for h in hs]), torch.cat([h.cache.layers[i][1] for h in hs]))
                  for i in range(len(hs[0].cache.layers))]
        return KVCache(layers, hs[0].cache.frame_index)

    @staticmethod
    def _take(x: torch.Tensor, pos: list[int]) -> torch.Tensor:
        if pos == list(range(pos[0], pos[0] + len(pos))):
            return x[pos[0]:pos[0] + len(pos)]
        return torch.stack([x[p] for p in pos])

    @torch.inference_mode()
    def push(self, rotations: torch.Tensor, translations: torch.Tensor, replicas: Sequence[int] | None = None) -> None:
        """Append a clean frame to the history.

        After a draw of several model steps (Δt > ``max_step_ps``) its intermediate frames are appended
        first, so the frame pushed should be the caller's version of that draw.

        Parameters
        ----------
        rotations, translations
            ``[N, 3, 3]`` and ``[N, 3]`` nm; with ``replicas``: ``[R', N, 3, 3]`` and ``[R', N, 3]`` nm.
        replicas
            Indices of the R' replicas the frames belong to (default all R).
        """
        idx = self._indices(replicas, "push")
        rot, trans = self._check_frames(rotations, translations, len(idx))
        for k in idx:
            if k in self._pending:
                self._hist[k] = self._pending.pop(k)
        self._append(rot, trans, idx)

    def _append(self, rot: torch.Tensor, trans: torch.Tensor, idx: list[int]) -> None:
        """Push ``[R', N, 3, 3]``, ``[R', N, 3]`` nm frames onto the histories of replicas ``idx``."""
        cfg = self.config
        for (count, _), pos in self._groups(idx):
            hs = [self._hist[idx[p]] for p in pos]
            r, t = self._take(rot, pos), self._take(trans, pos)
            G = len(hs)
            if cfg.align_history and hs[0].last is not None:
                a_rot, a_trans = superpose(t, torch.stack([h.last[1] for h in hs]), self.residues.residue_mask)
                for g, h in enumerate(hs):
                    h.align = (a_rot[g], a_trans[g])
                r, t = a_rot[:, None] @ r, apply(a_rot[:, None], a_trans[:, None], t)
            n_rot, n_trans = context_noise(self.model, self.diffusion, r, t, count)
            if hs[0].last is None:
                prev_rot, prev_trans = n_rot, n_trans
            else:
                prev_rot, prev_trans = torch.stack([h.last[2] for h in hs]), torch.stack([h.last[3] for h in hs])
            res = self._residues_for(G)
            has_prev = torch.full((G, 1), hs[0].last is not None, dtype=torch.bool, device=self.device)
            feats = clean_inputs(res, n_rot[:, None], n_trans[:, None], prev_rot[:, None], prev_trans[:, None],
                                 has_prev, cfg.translation_scale)
            index = torch.full((1,), count, dtype=torch.long, device=self.device)
            tau = torch.full((G, 1), cfg.ctx_tau_inference, device=self.device)
            _, kvs = self.model.trunk(
                feats, res.residue_type, res.residue_index, res.residue_mask, n_rot[:, None], n_trans[:, None],
                tau, torch.zeros(G, device=self.device), index, torch.zeros(1, dtype=torch.bool, device=self.device),
                self._stacked_cache(hs),
            )
            for g, h in enumerate(hs):
                h.cache.append([(k[g:g + 1], v[g:g + 1]) for k, v in kvs], index, keep=self.window)
                h.last = (r[g], t[g], n_rot[g], n_trans[g])
                h.count += 1

    @torch.inference_mode()
    def sample(
        self, dt_ps: float | Sequence[float], generators: torch.Generator | Sequence[torch.Generator],
        replicas: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the next frame ``Δt = dt_ps`` after the last pushed one (not appended; a Δt longer than
        ``max_step_ps`` is drawn in equal model steps whose intermediate frames the next push appends).

        With a χ head the side-chain torsions of the draw are left in :attr:`last_chi` (``[M + K, N, 4]`` rad,
        M = ``config.chi_draws`` independent draws, the first being the draw, then K =
        ``config.chi_fallback_draws`` from the flattened head (:func:`~openmm_starmd.model.chi.draw_chi`); with
        ``replicas`` ``[R', M + K, N, 4]``; None without a χ head): drawn from the clean prediction of the last
        sampler step of the last model step, each replica from its own generator after its frame noise.

        Parameters
        ----------
        dt_ps
            Physical step (ps); with ``replicas``, one for all or one per sampled replica.
        generators
            A :class:`torch.Generator` on the model's device; with ``replicas``, a list of them, one per
            sampled replica (replica k draws all its noise from its own generator, so it reproduces a
            single-replica rollout seeded the same).
        replicas
            Indices of the R' replicas to sample (default all R).

        Returns
        -------
        rotations, translations
            ``[N, 3, 3]`` and ``[N, 3]`` nm; with ``replicas``, ``[R', N, 3, 3]`` and ``[R', N, 3]`` nm.
        """
        idx = self._indices(replicas, "sample")
        gens = [generators] if self.replicas is None else list(generators)
        dts = [float(x) for x in (dt_ps if isinstance(dt_ps, Sequence) else [dt_ps] * len(idx))]
        if len(gens) != len(idx) or len(dts) != len(idx):
            raise StarMDError(f"sample got {len(gens)} generators and {len(dts)} dt_ps for {len(idx)} replicas: "
                              "give one generator (and one dt_ps or a single value) per sampled replica")
        for dt in dts:
            if not (dt > 0 and math.isfinite(dt)):
                raise StarMDError(f"dt_ps must be positive, got {dt}")
        for g in gens:
            if not isinstance(g, torch.Generator) or not _same_device(g.device, self.device):
                where = g.device if isinstance(g, torch.Generator) else type(g).__name__
                raise StarMDError(f"sample needs torch.Generator(s) on the model's device {self.device}, got {where}: "
                                  f"create them with torch.Generator(device={str(self.device)!r})")
        if any(self._hist[k].last is None for k in idx):
            raise StarMDError("Rollout.sample needs at least one pushed frame: call push(rotations, translations)")
        for k in idx:
            self._pending.pop(k, None)
        steps = [self._steps(dt) for dt in dts]
        committed = [self._hist[k] for k in idx]
        for p, k in enumerate(idx):  # intermediate frames go onto copies; the caller's push commits them
            if steps[p] > 1:
                self._hist[k] = fork(self._hist[k])
        result: list[tuple[torch.Tensor, ...]] = [()] * len(idx)
        try:
            for s in range(max(steps)):
                live = [p for p in range(len(idx)) if steps[p] > s]
                rot, trans, chi = self._draw([dts[p] / steps[p] for p in live], [gens[p] for p in live],
                                             [idx[p] for p in live], [steps[p] == s + 1 for p in live])
                for j, p in enumerate(live):
                    if steps[p] == s + 1:
                        result[p] = (rot[j], trans[j]) + (() if chi is None else (chi[j],))
                go_on = [j for j, p in enumerate(live) if steps[p] > s + 1]
                if go_on:
                    self._append(rot[go_on], trans[go_on], [idx[live[j]] for j in go_on])
            for p, k in enumerate(idx):
                if steps[p] > 1:
                    self._pending[k] = self._hist[k]
        finally:
            for p, k in enumerate(idx):
                self._hist[k] = committed[p]
        rot, trans = torch.stack([r[0] for r in result]), torch.stack([r[1] for r in result])
        chi = torch.stack([r[2] for r in result]) if len(result[0]) == 3 else None
        if self.replicas is None:
            self.last_chi = None if chi is None else chi[0]
            return rot[0], trans[0]
        self.last_chi = chi
        return rot, trans

    def _steps(self, dt_ps: float) -> int:
        """Model steps a draw of ``dt_ps`` takes."""
        if self.max_step_ps <= 0:
            return 1
        return max(1, math.ceil(dt_ps / self.max_step_ps - 1e-9))

    def _sampler(self, last: bool) -> tuple[bool, int]:
        """(ODE?, sampler steps) of a model step, the last of its jump or not; the ``num_steps`` override
        takes the place of the config's ``num_sampler_steps``."""
        cfg = self.config if self.num_steps is None else self.config.replace(num_sampler_steps=int(self.num_steps))
        return cfg.deterministic_step(last), cfg.sampler_steps(last)

    def _draw(self, dts: list[float], gens: list[torch.Generator], idx: list[int],
              last: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One model step for replicas ``idx`` (``last``: the last step of each one's jump, which may take another
        sampler): rotations ``[R', N, 3, 3]``, translations ``[R', N, 3]`` nm and χ ``[R', M, N, 4]`` rad (None
        without a χ head), in the order of ``idx``. Replicas that share a history length and a sampler share one
        forward pass; each draws from its own generator, so the grouping changes no draw."""
        out: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        samplers = {flag: self._sampler(flag) for flag in set(last)}
        for (count, (deterministic, num_steps)), pos in self._groups(idx, [samplers[flag] for flag in last]):
            hs = [self._hist[idx[p]] for p in pos]
            G = len(hs)
            ref_rot = torch.stack([h.last[0] for h in hs])[:, None]
            ref_trans = torch.stack([h.last[1] for h in hs])[:, None]
            index = torch.full((1,), count, dtype=torch.long, device=self.device)
            dt = dts[pos[0]] if self.replicas is None else torch.tensor([dts[p] for p in pos], device=self.device)
            memo = self._per_tau.setdefault((G, tuple(dts[p] for p in pos), self.temperature_k), {})
            denoise = make_denoiser(self.model, self.diffusion, self._residues_for(G), ref_rot, ref_trans, dt, index,
                                    self._stacked_cache(hs), temperature_k=self.temperature_k, memo=memo,
                                    traced=self._traced if self.traced and count >= self.window else None)
            draw_gens = gens[0] if self.replicas is None else [gens[p] for p in pos]
            rel_rot, rel_x = sample_relative(denoise, (G, 1, self.num_residues), self.diffusion, draw_gens,
                                             self.device, num_steps, deterministic)
            rot, trans = absolute(ref_rot, ref_trans, rel_rot, rel_x, self.config.translation_scale)
            back_rot, back_trans = invert(torch.stack([h.align[0] for h in hs]), torch.stack([h.align[1] for h in hs]))
            rot = back_rot[:, None] @ rot[:, 0]
            trans = apply(back_rot[:, None], back_trans[:, None], trans[:, 0])
            logits = denoise.chi_logits
            chi = draw_chi(None if logits is None else logits[:, 0], [gens[p] for p in pos], self.config.chi_draws,
                           self.config.chi_fallback_draws, self.config.chi_fallback_temperature)
            out.append((pos, rot, trans, chi))
        if len(out) == 1:
            return out[0][1], out[0][2], out[0][3]
        order = {p: (o, g) for o, (pos, *_) in enumerate(out) for g, p in enumerate(pos)}

        def gather(part: int) -> torch.Tensor:
            return torch.stack([out[order[p][0]][part][order[p][1]] for p in range(len(idx))])

        return gather(1), gather(2), None if out[0][3] is None else gather(3)

    def forget(self, replicas: Sequence[int] | None = None) -> None:
        """Empty the history of ``replicas`` (default all), keeping the others'."""
        for k in self._indices(replicas, "forget"):
            self._hist[k] = self._empty()
            self._pending.pop(k, None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """History (cache, last frame, frame count; per replica ``r{k}.``-prefixed with ``replicas``) as a
        flat dict of CPU tensors (safetensors-friendly)."""
        window = torch.tensor(self.window, device="cpu")
        if self.replicas is None:
            return {**history_state(self._hist[0]), "window": window}
        state = {"replicas": torch.tensor(self.replicas, device="cpu"), "window": window}
        for k, h in enumerate(self._hist):
            state.update({f"r{k}.{name}": x for name, x in history_state(h).items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` so the rollout (every replica) continues exactly."""
        saved = int(state["replicas"]) if "replicas" in state else None
        if saved != self.replicas:
            raise StarMDError(f"rollout state is for replicas={saved} but this Rollout has replicas={self.replicas}: "
                              "build the Rollout with the same number of replicas")
        self.window = int(state["window"])
        self._pending.clear()
        if self.replicas is None:
            self._hist = [load_history(state, self.num_residues, self.config.num_blocks, self.device)]
        else:
            parts = [{name[len(f"r{k}."):]: x for name, x in state.items() if name.startswith(f"r{k}.")}
                     for k in range(self.replicas)]
            self._hist = [load_history(part, self.num_residues, self.config.num_blocks, self.device) for part in parts]
