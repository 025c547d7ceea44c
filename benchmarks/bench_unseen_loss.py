"""Loss of two or more models on the same windows, per system, split into systems each model never trained on.

The training objective with a fixed noise seed on fixed windows: for a system a model held out
(``held_out_systems`` in its ``model.json``) or never had in its data (``--unseen-by``), windows come from
the whole trajectory; for the others from the in-time held-out tail (``--val-fraction``), as in training.
Every model sees identical windows and noise. The frame loss (rotation + translation + backbone terms,
the part every model shares) is reported apart from the χ head's cross-entropy (nats per torsion).

    python benchmarks/bench_unseen_loss.py DATA --models default /path/model_chi \
        --unseen-by default=FIFI,HGDD,...
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.data.sources import find_systems
from openmm_starmd.diffusion.sampler import FrameDiffusion
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import load_model, model_folder
from openmm_starmd.train.objective import diffusion_loss


def held_out(model: str, extra: dict[str, list[str]]) -> set[str]:
    """Systems ``model`` never trained on: its recorded held-out systems plus ``--unseen-by`` names."""
    meta = json.loads((model_folder(model) / "model.json").read_text()).get("metadata", {})
    return set(meta.get("held_out_systems") or []) | set(extra.get(model, []))


def losses(net: torch.nn.Module, batches: list[dict], seed: int) -> dict[str, float]:
    """Mean frame loss and χ cross-entropy over ``batches`` with a fixed noise seed."""
    cfg = net.config
    diffusion = FrameDiffusion(cfg)
    gen = torch.Generator().manual_seed(seed)
    frame, chi = [], []
    with torch.no_grad():
        for batch in batches:
            parts = diffusion_loss(net, diffusion, batch, gen)[1]
            frame.append(cfg.rot_loss_weight * parts["rot"] + cfg.trans_loss_weight * parts["trans"]
                         + cfg.backbone_loss_weight * parts["backbone"])
            if "chi" in parts:
                chi.append(parts["chi"])
    return {"frame": float(np.mean(frame)), "chi": float(np.mean(chi)) if chi else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="system folders or their roots")
    parser.add_argument("--models", nargs="+", default=["default"], help="model folders or default")
    parser.add_argument("--unseen-by", nargs="*", default=[], metavar="MODEL=NAME,NAME",
                        help="systems a model never trained on beyond its recorded held-out ones")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--dt-range", type=float, nargs=2, metavar=("LOW_PS", "HIGH_PS"),
                        help="score only windows whose frames are Δt apart within this range (ps; default: any Δt)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/unseen_loss.json")
    parser.add_argument("--md", default="benchmarks/results/unseen_loss.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = {}
    for item in args.unseen_by:
        name, _, systems = item.partition("=")
        extra[name] = [s for s in systems.split(",") if s]
    nets = {m: load_model(m)[0].eval() for m in args.models}
    unseen = {m: held_out(m, extra) for m in args.models}
    window = {n.config.window for n in nets.values()}
    if len(window) != 1:
        raise SystemExit("models with different windows cannot share windows")
    window = window.pop()
    rows = []
    for system in find_systems(args.data):
        # A system some model never saw is scored on all of it; otherwise on the tail every model held out.
        whole = any(system.name in unseen[m] for m in args.models)
        span = (0.0, 1.0) if whole else (1.0 - args.val_fraction, 1.0)
        try:
            data = TrajectoryWindows([system], window=window, seed=args.seed, time_range=span,
                                     dt_range_ps=None if args.dt_range is None else tuple(args.dt_range))
        except StarMDError as err:  # a short tail cannot hold windows at a long --dt-range
            print(f"{system.name}: skipped ({err})", flush=True)
            continue
        gen = torch.Generator().manual_seed(args.seed)
        batches = [collate_windows([data[int(torch.randint(len(data), (), generator=gen))]
                                    for _ in range(args.batch_size)]) for _ in range(args.batches)]
        row = {"system": system.name, "span": list(span), "models": {}}
        for m, net in nets.items():
            row["models"][m] = {**losses(net, batches, args.seed), "unseen": system.name in unseen[m]}
        rows.append(row)
        print(system.name, {m: (round(v["frame"], 4), v["chi"] and round(v["chi"], 3), v["unseen"])
                            for m, v in row["models"].items()}, flush=True)
    summary = {}
    for m in args.models:
        for kind in (True, False):
            sel = [r["models"][m] for r in rows if r["models"][m]["unseen"] == kind]
            if sel:
                key = f"{m} {'unseen' if kind else 'trained-on (tail)'}"
                chis = [s["chi"] for s in sel if s["chi"] is not None]
                summary[key] = {"systems": len(sel), "frame": float(np.mean([s["frame"] for s in sel])),
                                "chi": float(np.mean(chis)) if chis else None}
    both = [r for r in rows if all(r["models"][m]["unseen"] for m in args.models)]
    dt_text = ("random Δt as in training" if args.dt_range is None
               else f"random Δt within {args.dt_range[0]:g}–{args.dt_range[1]:g} ps")
    lines = ["# Loss on the same windows: systems each model never trained on", "",
             f"Models: {', '.join(f'`{m}`' for m in args.models)}. {args.batches} batches of {args.batch_size} "
             f"windows per system (window {window}, {dt_text}), noise seed {args.seed}. Frame loss ="
             " rotation + translation + backbone terms of the training objective; χ = cross-entropy of the χ "
             "head (nats per torsion; uniform over 36 bins = 3.58). Systems unseen by a model are scored on "
             f"their whole trajectory, the others on the last {args.val_fraction:.0%} (in-time held out).", "",
             "| system | " + " | ".join(f"{m} frame | {m} χ" for m in args.models) + " |",
             "|---|" + "---|---|" * len(args.models)]
    for r in rows:
        cells = []
        for m in args.models:
            v = r["models"][m]
            cells += [f"{v['frame']:.4f}{' (unseen)' if v['unseen'] else ''}",
                      "" if v["chi"] is None else f"{v['chi']:.3f}"]
        lines.append(f"| {r['system']} | " + " | ".join(cells) + " |")
    lines += ["", "| model / systems | n | mean frame loss | mean χ CE |", "|---|---|---|---|"]
    for k, v in summary.items():
        chi = "" if v["chi"] is None else f"{v['chi']:.3f}"
        lines.append(f"| {k} | {v['systems']} | {v['frame']:.4f} | {chi} |")
    if both:
        means = {m: float(np.mean([r["models"][m]["frame"] for r in both])) for m in args.models}
        lines += ["", f"Systems no model trained on ({len(both)}: {', '.join(r['system'] for r in both)}): "
                  + ", ".join(f"`{m}` frame loss {v:.4f}" for m, v in means.items()) + "."]
        summary["unseen by all"] = {"systems": [r["system"] for r in both], "frame": means}
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_json(args.json, {"models": args.models, "batches": args.batches, "batch_size": args.batch_size,
                                  "seed": args.seed, "val_fraction": args.val_fraction, "rows": rows,
                                  "summary": summary, "machine": f"{os.cpu_count()}-core CPU"})
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
