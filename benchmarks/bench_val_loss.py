"""Held-out validation loss of a trained model against the same architecture untrained, per system.

Uses the split of ``starmd train`` (the last ``--val-fraction`` of every replica, never seen in training)
and the training objective with a fixed noise seed, so both models see identical windows and noise.

    python benchmarks/bench_val_loss.py /work/shared/data/md --model default
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.model.checkpoint import load_model
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.train.run import split_in_time, system_folders
from openmm_starmd.train.trainer import evaluate


def held_out_batches(folder: Path, window: int, n_batches: int, batch_size: int, seed: int) -> list[dict]:
    """``n_batches`` fixed batches of random windows (random Δt as in training) from one held-out folder."""
    data = TrajectoryWindows([folder], window=window, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    return [collate_windows([data[int(torch.randint(len(data), (), generator=gen))] for _ in range(batch_size)])
            for _ in range(n_batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="reference system folders or their root")
    parser.add_argument("--model", default="default", help="model folder or default (the shipped model)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of each replica (0.1)")
    parser.add_argument("--batches", type=int, default=5, help="batches per system (default 5)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/val_loss.json")
    parser.add_argument("--md", default="benchmarks/results/val_loss.md")
    args = parser.parse_args()

    trained, _ = load_model(args.model)
    torch.manual_seed(0)
    untrained = StarMDNetwork(trained.config).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="starmd_val_") as tmp:
        _, val_folders = split_in_time(system_folders(args.data), args.val_fraction, Path(tmp))
        for folder in val_folders:
            batches = held_out_batches(folder, trained.config.window, args.batches, args.batch_size, args.seed)
            rows.append({"system": folder.name, "windows": args.batches * args.batch_size,
                         "trained": evaluate(trained, batches), "untrained": evaluate(untrained, batches)})
            print(f"{folder.name:<8} trained {rows[-1]['trained']:.4f}  untrained {rows[-1]['untrained']:.4f}",
                  flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("trained", "untrained")}
    lines = ["# Held-out validation loss: trained vs untrained", "",
             f"Model `{args.model}`; last {args.val_fraction:.0%} of every replica held out; {args.batches} batches "
             f"of {args.batch_size} windows per system (window {trained.config.window}, random Δt as in "
             "training), fixed noise seed; loss = the training objective (lower is better).", "",
             "| System | Trained | Untrained | Ratio |", "|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['trained']:.4f} | {r['untrained']:.4f} | {r['trained'] / r['untrained']:.3f} |"
              for r in rows]
    lines += [f"| **mean** | {mean['trained']:.4f} | {mean['untrained']:.4f} | "
              f"{mean['trained'] / mean['untrained']:.3f} |", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"model": args.model, "val_fraction": args.val_fraction, "batches": args.batches,
                                  "batch_size": args.batch_size, "seed": args.seed, "systems": rows, "mean": mean,
                                  "machine": f"{os.cpu_count()}-core CPU"})
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
