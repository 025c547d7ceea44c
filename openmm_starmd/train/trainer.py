"""Training loop: AdamW, warm-up + cosine learning rate, gradient clipping, EMA weights, bf16
autocast on GPU, tqdm progress, periodic validation, atomic resumable checkpoints, DDP.

Checkpoint folder layout (rank 0 writes)::

    model.safetensors + model.json    EMA weights and config, for inference (see model.checkpoint)
    train/live.safetensors            raw (non-EMA) weights
    train/optimizer.pt                AdamW state (torch.save; read back with weights_only=True)
    train/state.json                  step, options, history; written last, so it names a complete set
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from openmm_starmd.atomic import atomic_write, atomic_write_json, check_output_dir
from openmm_starmd.data.dataset import mixed_seed
from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import load_tensors, save_model, save_tensors
from openmm_starmd.model.config import ModelConfig
from openmm_starmd.model.network import StarMDNetwork, count_parameters
from openmm_starmd.train import ddp
from openmm_starmd.train.batches import BatchSampler
from openmm_starmd.train.objective import diffusion_loss


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings (the model's own settings live in :class:`ModelConfig`)."""

    steps: int = 1000
    batch_size: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every: int = 200
    val_batches: int = 4
    checkpoint_every: int = 500
    seed: int = 0
    progress: bool = True
    workers: int = 0  # DataLoader processes building training batches ahead (same batches as 0)


class LossModule(nn.Module):
    """Network + objective as one module, so DistributedDataParallel can hook its ``forward``."""

    def __init__(self, net: StarMDNetwork) -> None:
        super().__init__()
        self.net = net
        self.diffusion = FrameDiffusion(net.config)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        return diffusion_loss(self.net, self.diffusion, batch, generator)


def learning_rate(step: int, options: TrainOptions) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < options.warmup_steps:
        return options.lr * (step + 1) / options.warmup_steps
    span = max(1, options.steps - options.warmup_steps)
    frac = min(1.0, (step - options.warmup_steps) / span)
    return options.lr * (options.min_lr_ratio + (1 - options.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(net: StarMDNetwork, batches: Sequence[dict[str, torch.Tensor]], seed: int = 1234) -> float:
    """Mean loss of ``net`` over fixed ``batches`` with a fixed noise seed (comparable across models)."""
    was_training = net.training
    net.eval()
    module = LossModule(net)
    device = next(net.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for batch in batches:
        total += module(_to_device(batch, device), gen)[1]["loss"]
    net.train(was_training)
    return total / max(1, len(batches))


class Trainer:
    """Plain PyTorch training of a :class:`StarMDNetwork`.

    Parameters
    ----------
    config
        Model configuration (ignored on resume: the checkpoint's is used).
    train_data, val_data
        Map-style datasets of windows (see :class:`openmm_starmd.data.dataset.TrajectoryWindows`);
        ``val_data`` (the in-time split of the training systems) may be None.
    out_dir
        Model folder to write (see module docstring).
    options
        :class:`TrainOptions`.
    collate
        Function turning a list of window dicts into a batch (``collate_windows``).
    resume
        Continue from the checkpoint in ``out_dir``.
    overwrite
        Allow writing into an existing non-empty ``out_dir`` when not resuming.
    device
        ``"cpu"``, ``"cuda"`` or None (CUDA if available; under DDP the local rank's GPU).
    init_weights
        Starting weights (fine-tuning; must match ``config``); None: a fresh initialisation. Ignored on resume.
    record
        JSON-able facts about the run saved in ``model.json``'s metadata and ``train/state.json`` (e.g.
        ``"init"``: the checkpoint it started from; ``"held_out_systems"``); on resume the saved record stands.
    unseen_data
        Windows of systems never trained on; their loss is reported as ``unseen_loss`` beside ``val_loss``.
    """

    def __init__(
        self, config: ModelConfig, train_data: Any, val_data: Any, out_dir: str | Path, options: TrainOptions,
        collate: Any, resume: bool = False, overwrite: bool = False, device: str | None = None,
        init_weights: dict[str, torch.Tensor] | None = None, record: dict[str, Any] | None = None,
        unseen_data: Any = None,
    ) -> None:
        self.rank, self.world = ddp.rank_and_world()
        self.device = ddp.pick_device(device)
        self.out_dir = Path(out_dir)
        self.options = options
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.record = dict(record or {})
        state = None
        if resume:
            state = self._read_state()
            config = ModelConfig.from_dict(state["config"])
            self.record = dict(state.get("record", {}))
        elif self.rank == 0:
            check_output_dir(self.out_dir, overwrite)
        self.config = config
        torch.manual_seed(options.seed)  # identical initial weights on every rank
        self.net = StarMDNetwork(config).to(self.device)
        if init_weights is not None and state is None:
            missing, unexpected = self.net.load_state_dict(init_weights, strict=False)
            # only layers the checkpoint's model lacks may start fresh (a temperature condition or a χ head
            # added to it)
            if unexpected or any(not k.startswith(("temperature_", "chi_head.")) for k in missing):
                raise StarMDError(f"the --init weights do not fit this model (missing {list(missing)[:3]}, "
                                  f"unexpected {list(unexpected)[:3]}): the checkpoint folder is inconsistent")
            if any(k.startswith("temperature_") for k in missing):
                # a new temperature condition starts at zero output: the model starts as it was
                nn.init.zeros_(self.net.temperature_embed[2].weight)
                nn.init.zeros_(self.net.temperature_embed[2].bias)
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.module = ddp.wrap(LossModule(self.net), self.device)
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=options.lr, betas=(0.9, 0.99),
        )
        if state is not None:
            self._load_state(state)
        # Batch b of a rank's stream depends only on (seed, rank, b): a resumed run continues at batch `step`.
        self.sampler = BatchSampler(train_data, options.batch_size, options.seed * 7919 + self.rank, collate,
                                    workers=options.workers, start=self.step, pin_memory=self.device.type == "cuda")
        # Diffusion noise of step s is seeded from (seed, rank, s) too, so a resumed run continues exactly on
        # every rank (a saved generator state would only cover rank 0, the one that writes checkpoints).
        self.noise = torch.Generator(device=self.device)
        self.val_batches = self._fixed_batches(val_data, collate)
        self.unseen_batches = self._fixed_batches(unseen_data, collate)

    def _fixed_batches(self, data: Any, collate: Any) -> list[dict[str, torch.Tensor]]:
        """``options.val_batches`` batches of ``data``, the same on every call (empty without data)."""
        if data is None or len(data) == 0:
            return []
        sampler = BatchSampler(data, self.options.batch_size, 4242, collate)
        return [sampler.next() for _ in range(self.options.val_batches)]

    # ------------------------------------------------------------------ state
    def _read_state(self) -> dict[str, Any]:
        path = self.out_dir / "train" / "state.json"
        if not path.exists():
            raise StarMDError(f"nothing to resume in {self.out_dir}: run without --resume first")
        return json.loads(path.read_text())

    def _load_state(self, state: dict[str, Any]) -> None:
        live = load_tensors(self.out_dir / "train" / "live.safetensors")
        ema = load_tensors(self.out_dir / "model.safetensors")
        for key in [k for k in live if k.startswith("rng.")]:  # generator states of older checkpoints
            live.pop(key)
        self.net.load_state_dict(live)
        self.ema = {k: v.to(self.device) for k, v in ema.items()}
        opt = torch.load(self.out_dir / "train" / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(opt)
        self.step = int(state["step"])
        self.history = list(state.get("history", []))

    def save(self) -> None:
        """Write a complete checkpoint (rank 0 only; other ranks return at once)."""
        if self.rank != 0:
            return
        meta = {"step": self.step, "parameters": count_parameters(self.net), **self.record,
                "history": self.history[-50:]}
        save_model(self.out_dir, self.net, meta, state_dict=self.ema)
        (self.out_dir / "train").mkdir(exist_ok=True)
        live = dict(self.net.state_dict())
        save_tensors(self.out_dir / "train" / "live.safetensors", live, {"step": str(self.step)})
        with atomic_write(self.out_dir / "train" / "optimizer.pt", "wb") as handle:
            torch.save(self.optimizer.state_dict(), handle)
        atomic_write_json(self.out_dir / "train" / "state.json", {
            "step": self.step, "config": self.config.to_dict(), "options": dataclasses.asdict(self.options),
            "history": self.history, "world_size": self.world, "record": self.record,
        })

    # ------------------------------------------------------------------ loop
    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.options.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        for k, v in self.net.state_dict().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
            else:
                self.ema[k].copy_(v)

    def validation_loss(self, use_ema: bool = True, unseen: bool = False) -> float:
        """Loss on the fixed validation batches (EMA weights by default): the in-time split, or with
        ``unseen`` the held-out systems; NaN without such data."""
        batches = self.unseen_batches if unseen else self.val_batches
        if not batches:
            return float("nan")
        net = self.net
        if use_ema:
            net = StarMDNetwork(self.config).to(self.device)
            net.load_state_dict(self.ema)
        return evaluate(net, batches)

    def train_step(self) -> dict[str, float]:
        batch = _to_device(self.sampler.next(), self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.options)
        self.net.train()
        self.noise.manual_seed(mixed_seed(self.options.seed, 0x4E015E, self.rank, self.step))
        loss, parts = self.module(batch, self.noise)  # the objective autocasts the trunk to bf16 on GPU
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.options.grad_clip))
        self.optimizer.step()
        self.step += 1
        self._update_ema()
        return parts

    def fit(self) -> dict[str, Any]:
        """Train until ``options.steps``; returns a summary (final losses, wall time)."""
        opts = self.options
        start = time.perf_counter()
        bar = tqdm(total=opts.steps, initial=self.step, disable=not opts.progress or self.rank != 0,
                   desc="train", unit="it", dynamic_ncols=True)
        parts: dict[str, float] = {}
        running = None
        while self.step < opts.steps:
            parts = self.train_step()
            if not math.isfinite(parts["loss"]):
                raise StarMDError(f"training loss became {parts['loss']} at step {self.step}: lower --lr")
            running = parts["loss"] if running is None else 0.95 * running + 0.05 * parts["loss"]
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            record: dict[str, float] = {"step": self.step, "loss": running}
            if self.step % opts.val_every == 0 or self.step == opts.steps:
                if self.val_batches:
                    record["val_loss"] = self.validation_loss()
                if self.unseen_batches:
                    record["unseen_loss"] = self.validation_loss(unseen=True)
                if len(record) > 2:
                    bar.write(f"step {self.step}: train {running:.4f} "
                              + " ".join(f"{k.replace('_loss', '')} {record[k]:.4f}" for k in list(record)[2:]))
            if len(record) > 2 or self.step % 50 == 0:
                self.history.append(record)
            if self.step % opts.checkpoint_every == 0 or self.step == opts.steps:
                self.save()
        bar.close()
        self.save()
        ddp.barrier()
        last = self.history[-1] if self.history else {}
        return {"step": self.step, "train_loss": running, "wall_s": time.perf_counter() - start,
                "val_loss": last.get("val_loss"), "unseen_loss": last.get("unseen_loss"), **self.record}
