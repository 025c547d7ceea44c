"""The :class:`StarMDForce` module: STAR-MD score for a fixed context, with the openmm-torch signature."""

from __future__ import annotations

import copy
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from openmm_starmd.atomic import atomic_write
from openmm_starmd.errors import StarMDError
from openmm_starmd.forces.mapping import frame_score_forces
from openmm_starmd.frames.rigid import superpose_chain
from openmm_starmd.units import kt_kj_per_mol, to_kelvin, to_ps

__all__ = ["StarMDForce"]


def _as_network(model: Any) -> nn.Module:
    """A private, frozen, eval-mode copy of a STAR-MD network (or one loaded from a checkpoint path)."""
    if isinstance(model, (str, os.PathLike)):
        from openmm_starmd.model.checkpoint import load_model

        model, _ = load_model(model)
    if not isinstance(model, nn.Module) or not hasattr(model, "config") or not hasattr(model, "trunk"):
        raise StarMDError(f"StarMDForce needs a STAR-MD network or a checkpoint folder, got {type(model).__name__}")
    net = copy.deepcopy(model).to("cpu").eval()
    net.requires_grad_(False)
    return net


def _residue_range(residue_mask: torch.Tensor) -> tuple[int, int]:
    framed = torch.nonzero(residue_mask).flatten()
    if framed.numel() == 0:
        raise StarMDError("the topology has no residue with N, CA and C atoms: StarMDForce needs a protein")
    return int(framed[0]), int(framed[-1]) + 1


class StarMDForce(nn.Module):
    """The STAR-MD score at diffusion time τ for a fixed context, as forces on backbone N, CA, C.

    Parameters
    ----------
    model
        A STAR-MD network (:class:`~openmm_starmd.model.network.StarMDNetwork`) or a checkpoint folder;
        a frozen copy is kept (the caller's model is not changed).
    topology
        OpenMM (or mdtraj) topology of the System the force will act in. Residues between the first and
        the last one with N, CA, C are modelled (waters and ions after the protein are left out).
    context_positions
        The conditioning frames: ``[T, n_atoms, 3]`` or ``[n_atoms, 3]`` nm (array, tensor, Quantity or
        mdtraj trajectory), oldest first; the last one is the reference the state is measured from.
    dt_ps
        Physical step Δt the model is conditioned on, ps (Quantity accepted). Large Δt approaches the
        model's equilibrium limit.
    temperature
        Temperature for kT, K (Quantity accepted).
    tau
        Diffusion time of the score, in (0, 1]; default the config's ``tau_min``.
    window
        History frames attended to (default the model's K).
    """

    def __init__(
        self, model: Any, topology: Any, context_positions: Any, dt_ps: float | Any = 1000.0,
        temperature: float | Any = 300.0, tau: float | None = None, window: int | None = None,
    ) -> None:
        super().__init__()
        from openmm_starmd.data.featurize import featurize_topology
        from openmm_starmd.denoiser import context_noise
        from openmm_starmd.diffusion.sampler import FrameDiffusion
        from openmm_starmd.frames.protein import backbone_atom_indices, frames_from_positions
        from openmm_starmd.model.network import KVCache, log_dt_tensor
        from openmm_starmd.model.tokens import Residues, clean_inputs

        self.network = _as_network(model)
        cfg = self.network.config
        self.dt_ps = to_ps(dt_ps)
        self.temperature_k = to_kelvin(temperature)
        self.tau = float(cfg.tau_min if tau is None else tau)
        self.window = int(cfg.window if window is None else window)
        if not (self.dt_ps > 0 and math.isfinite(self.dt_ps)):
            raise StarMDError(f"dt_ps must be a positive number of ps, got {self.dt_ps}")
        if not self.temperature_k > 0:
            raise StarMDError(f"temperature must be positive (K), got {self.temperature_k}")
        if not 0.0 < self.tau <= 1.0:
            raise StarMDError(f"tau must be in (0, 1], got {self.tau}: use a small diffusion time such as 0.01")
        if self.window < 1:
            raise StarMDError(f"window must be at least 1 frame, got {self.window}")
        self.kt = kt_kj_per_mol(self.temperature_k)
        self.scale = float(cfg.translation_scale)
        self.diffusion = FrameDiffusion(cfg)

        feats = featurize_topology(topology)
        start, stop = _residue_range(feats.residue_mask)
        feats = feats.crop(start, stop) if (start, stop) != (0, feats.num_residues) else feats
        index, _ = backbone_atom_indices(topology)
        rot, trans, _ = frames_from_positions(context_positions, topology)
        rot, trans = rot[:, start:stop], trans[:, start:stop]
        if cfg.align_history:  # as in training; the last context frame (the reference) stays put
            rot, trans = superpose_chain(rot, trans, feats.residue_mask)
        T, N = trans.shape[:2]
        self.num_atoms = int(topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms)
        self.residues = Residues(feats.residue_type[None], feats.residue_index[None], feats.residue_mask[None],
                                 feats.chain_break[None])
        self.register_buffer("atom_index", index[start:stop, :3].clamp_min(0).clone())
        self.register_buffer("residue_mask", feats.residue_mask.clone())
        self.register_buffer("ref_rot", rot[-1].clone())
        self.register_buffer("ref_trans", trans[-1].clone())

        # Encode the context once (as Rollout.push would, frame by frame): its keys/values are fixed.
        noised = [context_noise(self.network, self.diffusion, rot[t], trans[t], t) for t in range(T)]
        n_rot = torch.stack([r for r, _ in noised])[None]
        n_trans = torch.stack([x for _, x in noised])[None]
        prev_rot = torch.cat([n_rot[:, :1], n_rot[:, :-1]], 1)
        prev_trans = torch.cat([n_trans[:, :1], n_trans[:, :-1]], 1)
        has_prev = (torch.arange(T) > 0)[None]
        frames = torch.arange(T)
        with torch.no_grad():
            clean = clean_inputs(self.residues, n_rot, n_trans, prev_rot, prev_trans, has_prev, self.scale)
            _, kvs = self.network.trunk(
                clean, self.residues.residue_type, self.residues.residue_index, self.residues.residue_mask,
                n_rot, n_trans, torch.full((1, T), cfg.ctx_tau_inference), torch.zeros(1), frames,
                torch.zeros(T, dtype=torch.bool),
            )
        cache = KVCache()
        cache.append(kvs, frames, keep=self.window)
        for i, (k, v) in enumerate(cache.layers):
            self.register_buffer(f"cache_k_{i}", k.clone())
            self.register_buffer(f"cache_v_{i}", v.clone())
        self.register_buffer("cache_frames", cache.frame_index.clone())
        self.register_buffer("target_frame", torch.tensor([T]))
        self.register_buffer("log_dt", log_dt_tensor(self.dt_ps, 1, "cpu"))
        tau_t = torch.full((1, 1), self.tau)
        sig_rot, alpha, sig_tr = self.diffusion.sigmas(tau_t)
        self.register_buffer("tau_t", tau_t)
        self.register_buffer("sig_rot", sig_rot)
        self.register_buffer("alpha", alpha)
        self.register_buffer("sig_tr", sig_tr)
        self._traced: torch.jit.ScriptModule | None = None
        self.num_residues = N

    def _frames(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """N, CA, C ``[N, 3]`` each and the frames ``[N, 3, 3]``, ``[N, 3]`` of ``positions`` ``[n_atoms, 3]``."""
        from openmm_starmd.frames.rigid import frames_from_three_points

        atoms = positions[self.atom_index]  # [N, 3 atoms, 3]
        n, ca, c = atoms[:, 0], atoms[:, 1], atoms[:, 2]
        rot, trans = frames_from_three_points(n, ca, c)
        eye = torch.eye(3, dtype=rot.dtype).expand_as(rot)
        rot = torch.where(self.residue_mask[:, None, None], rot, eye)
        trans = trans * self.residue_mask[:, None].to(trans.dtype)
        return n, ca, c, rot, trans

    def frame_scores(self, positions: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Score of the current frames under the model's p_τ(frame | context, Δt).

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm (tensor, array or Quantity).

        Returns
        -------
        rot_score, trans_score
            ``[N, 3]`` 1/rad (body frame) and ``[N, 3]`` 1/nm (global axes); zero for masked residues.
        """
        from openmm_starmd.frames.protein import as_positions

        pos = positions if torch.is_tensor(positions) and positions.dim() == 2 else as_positions(positions)[0]
        if pos.shape != (self.num_atoms, 3):
            raise StarMDError(f"positions must be [{self.num_atoms}, 3] nm for this topology, got {tuple(pos.shape)}")
        return self._scores(*self._frames(pos.detach().to(torch.float32))[3:])

    def _scores(self, rot: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from openmm_starmd.model.network import KVCache
        from openmm_starmd.model.tokens import noisy_inputs, relative

        rel_rot, rel_x = relative(self.ref_rot, self.ref_trans, rot, trans, self.scale)
        rel_rot, rel_x = rel_rot[None, None], rel_x[None, None]
        feats, n_rot, n_trans = noisy_inputs(self.residues, self.ref_rot[None, None], self.ref_trans[None, None],
                                             rel_rot, rel_x, self.scale, self.sig_rot)
        layers = [(getattr(self, f"cache_k_{i}"), getattr(self, f"cache_v_{i}"))
                  for i in range(len(self.network.blocks))]
        cache = KVCache(layers, self.cache_frames)
        res = self.residues
        h, _ = self.network.trunk(feats, res.residue_type, res.residue_index, res.residue_mask, n_rot, n_trans,
                                  self.tau_t, self.log_dt, self.target_frame, torch.ones(1, dtype=torch.bool), cache)
        rot0, x0, _ = self.network.heads(h, rel_rot, rel_x, self.sig_rot, self.alpha, self.sig_tr)
        mask = self.residue_mask[:, None].to(rot.dtype)
        rot_score = self.diffusion.so3.score(rel_rot[0, 0], rot0[0, 0], self.tau_t[0]) * mask
        local = -(rel_x[0, 0] - self.alpha[0] * x0[0, 0]) / self.sig_tr[0] ** 2
        trans_score = torch.einsum("nij,nj->ni", self.ref_rot, local) * (self.scale * mask)
        return rot_score, trans_score

    def forward(self, positions: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """openmm-torch entry point.

        Parameters
        ----------
        positions
            ``[n_atoms, 3]`` nm (float64 from OpenMM).
        weight
            ``[]`` λ, the value of the global parameter :data:`WEIGHT_PARAMETER`.

        Returns
        -------
        energy, forces
            ``[]`` kJ/mol (always 0: the force is non-conservative) and ``[n_atoms, 3]`` kJ/mol/nm.
        """
        A, _ = positions.shape
        pos = positions.detach().to(torch.float32)
        n, ca, c, rot, trans = self._frames(pos)
        rot_score, trans_score = self._scores(rot, trans)
        f_n, f_ca, f_c = frame_score_forces(n, ca, c, rot_score, trans_score, self.kt)
        per_atom = torch.where(self.residue_mask[:, None, None], torch.stack([f_n, f_ca, f_c], 1), 0.0)
        forces = torch.zeros(A, 3, dtype=torch.float64).index_add(
            0, self.atom_index.reshape(-1), per_atom.reshape(-1, 3).double())
        return torch.zeros((), dtype=torch.float64), forces * weight.to(torch.float64)

    def forces(self, positions: Any, weight: float = 1.0) -> np.ndarray:
        """Eager (non-TorchScript) forces ``[n_atoms, 3]`` kJ/mol/nm at ``positions`` ``[n_atoms, 3]`` nm."""
        from openmm_starmd.frames.protein import as_positions

        pos = as_positions(positions, self.num_atoms)[0].double()
        with torch.no_grad():
            _, f = self(pos, torch.tensor(float(weight), dtype=torch.float64))
        return f.numpy()

    def to_torchscript(self, example_positions: Any = None) -> torch.jit.ScriptModule:
        """This module traced with TorchScript for the system's size (``[n_atoms, 3]`` positions).

        ``example_positions`` (default the reference context frame's atoms) only drives the trace.
        """
        from openmm_starmd.frames.protein import IDEAL_LOCAL_BACKBONE, as_positions

        if example_positions is None:  # ideal backbone on the reference frames, other atoms at 0
            world = torch.einsum("nij,aj->nai", self.ref_rot, IDEAL_LOCAL_BACKBONE) + self.ref_trans[:, None]
            pos = torch.zeros(self.num_atoms, 3, dtype=torch.float64)
            pos[self.atom_index.reshape(-1)] = world.reshape(-1, 3).double()
        else:
            pos = as_positions(example_positions, self.num_atoms)[0].double()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but openmm-torch needs it
            traced = torch.jit.trace(self, (pos, torch.tensor(1.0, dtype=torch.float64)), check_trace=False)
            return torch.jit.freeze(traced.eval())

    def export(self, path: str | os.PathLike, example_positions: Any = None) -> Path:
        """Write the TorchScript module (:meth:`to_torchscript`) to ``path`` atomically; returns the path."""
        path = Path(path)
        module = self.to_torchscript(example_positions)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buffer)
        with atomic_write(path, "wb") as handle:
            handle.write(buffer.getvalue())
        return path

    def create_openmm_force(
        self, path: str | os.PathLike, weight: float = 1.0, example_positions: Any = None,
    ) -> Any:
        """Export to ``path`` and wrap it in an ``openmmtorch.TorchForce``.

        Parameters
        ----------
        path
            TorchScript file written next to the System (``.pt``).
        weight
            Default value of the global parameter :data:`WEIGHT_PARAMETER` (λ).

        Returns
        -------
        openmmtorch.TorchForce
            Outputs forces, energy 0, no periodic boundaries, global parameter :data:`WEIGHT_PARAMETER`.
        """
        from openmm_starmd.forces.openmm_api import WEIGHT_PARAMETER, import_openmmtorch

        openmmtorch = import_openmmtorch()
        if not math.isfinite(float(weight)):
            raise StarMDError(f"weight must be a finite number, got {weight}")
        path = self.export(path, example_positions)
        force = openmmtorch.TorchForce(str(path))
        force.setOutputsForces(True)
        force.setUsesPeriodicBoundaryConditions(False)
        force.addGlobalParameter(WEIGHT_PARAMETER, float(weight))
        return force
