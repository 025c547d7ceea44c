"""Train the default model (``small`` preset) on one GPU within a wall-clock budget.

``starmd train`` with ``--workers`` (batches built ahead by DataLoader processes, since building windows
on the CPU would otherwise take as long as the GPU step) and one addition: the number of optimiser steps
is chosen from a short timing probe so that the cosine learning-rate schedule ends inside ``--budget``
seconds.
The chosen step count, the timing and the device are written to ``OUTPUT/train/gpu_run.json``.

    python benchmarks/train_default_gpu.py /work/shared/data/md -o /tmp/models/default_gpu

made the shipped weights on one NVIDIA H200 (the probe chose 4070 steps; ``--steps 4070`` repeats that
schedule without the probe). That run used this script as of commit 8be98ea, whose own worker sampler
drew a different (equally random) stream of windows than ``--workers`` does now. See the model card.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.model.config import preset
from openmm_starmd.train.run import split_in_time, system_folders
from openmm_starmd.train.trainer import Trainer, TrainOptions


def time_steps(config, train_data: TrajectoryWindows, out: Path, args: argparse.Namespace) -> float:
    """Seconds per optimiser step of a throwaway trainer: 20 warm-up steps, then 40 timed ones."""
    options = TrainOptions(steps=10**6, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False,
                           val_every=10**9, checkpoint_every=10**9, workers=args.workers)
    probe = Trainer(config, train_data, None, out, options, collate_windows, overwrite=True, device=args.device)
    for _ in range(20):
        probe.train_step()
    if probe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(40):
        probe.train_step()
    if probe.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="reference MD folders (NAME/NAME.pdb + NAME_R*.xtc) or their roots")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--budget", type=float, default=460.0, help="seconds of training (default 460)")
    parser.add_argument("--steps", type=int, help="optimiser steps: skips the timing probe and --budget")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    config = preset("small")
    out = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="starmd_gpu_") as tmp:
        folders, val_folders = split_in_time(system_folders(args.data), args.val_fraction, Path(tmp) / "split")
        train_data = TrajectoryWindows(folders, window=config.window, seed=args.seed)
        val_data = TrajectoryWindows(val_folders, window=config.window, seed=args.seed + 1)

        step_s = None
        if args.steps is None:
            step_s = time_steps(config, train_data, Path(tmp) / "probe", args)
            # 5% margin for validation passes and checkpoints
            steps = max(100, int(0.95 * args.budget / step_s))
            print(f"probe: {step_s * 1e3:.1f} ms/step at batch {args.batch_size} -> {steps} steps", flush=True)
        else:
            steps = args.steps
        options = TrainOptions(steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=200,
                               val_every=max(1, steps // 10), val_batches=8, checkpoint_every=max(1, steps // 10),
                               seed=args.seed, progress=False, workers=args.workers)
        if out.exists():
            shutil.rmtree(out)
        trainer = Trainer(config, train_data, val_data, out, options, collate_windows, device=args.device)
        summary = trainer.fit()
    device_name = torch.cuda.get_device_name() if trainer.device.type == "cuda" else "cpu"
    record = {"device": device_name, "torch": torch.__version__, "batch_size": args.batch_size, "lr": args.lr,
              "workers": args.workers, "budget_s": args.budget, "steps": steps,
              "probe_ms_per_step": None if step_s is None else step_s * 1e3, **summary}
    atomic_write_json(out / "train" / "gpu_run.json", record)
    print(record, flush=True)


if __name__ == "__main__":
    main()
