"""One model jump against the reference MD: how far it moves, how close to the truth, whether the chain holds.

For each system and Δt, ``--trials`` histories of K frames (Δt apart) are taken from the held-out last 10% of
the first replica; the model draws the frame Δt after the last one (raw model output, no relaxation). Per
trial, CA RMSDs after superposition: draw vs the true next frame, draw vs the last history frame, and the
true next frame vs the last one (how far MD itself moved); and the largest deviation of a bonded CA–CA
distance from 0.38 nm. A model that has learned the dynamics moves about as far as MD does, and keeps
the chain intact.

    python benchmarks/bench_jump.py /work/shared/data/md --systems CLN025 AMRV --model default
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import find_atlas_folders
from openmm_starmd.data.featurize import featurize_topology
from openmm_starmd.frames.protein import frames_from_positions
from openmm_starmd.model.checkpoint import load_model
from openmm_starmd.rollout import Rollout

CA_CA_NM = 0.38


def _rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """CA RMSD (nm) after optimal superposition of ``a`` and ``b`` ``[N, 3]``."""
    ta = md.Trajectory(a[None].astype(np.float32), None)
    tb = md.Trajectory(b[None].astype(np.float32), None)
    return float(md.rmsd(ta, tb)[0])


def jump_rows(model: torch.nn.Module, folder: Path, dts_ps: list[float], trials: int, seed: int) -> list[dict]:
    """Rows (one per Δt) of mean jump statistics for one reference system."""
    name = folder.name
    xtc = sorted(folder.glob(f"{name}_R*.xtc"))[0]
    traj = md.load(str(xtc), top=str(folder / f"{name}.pdb"))
    top = traj.topology.to_openmm()
    feats = featurize_topology(top)
    ca = traj.topology.select("name CA")
    window = model.config.window
    first_held_out = int(0.9 * traj.n_frames)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for dt in dts_ps:
        stride = max(1, round(dt / 10.0))  # reference frames are 10 ps apart
        last_start = traj.n_frames - 1 - window * stride
        starts = np.linspace(min(first_held_out, last_start), last_start, trials).round().astype(int)
        stats = []
        for s in starts:
            history = [s + k * stride for k in range(window)]
            rollout = Rollout(model, feats)
            for i in history:
                rot, trans, _ = frames_from_positions(traj.xyz[i], top)
                rollout.push(rot.reshape(-1, 3, 3), trans.reshape(-1, 3))
            _, draw = rollout.sample(10.0 * stride, gen)
            draw = draw.numpy()
            true, last = traj.xyz[history[-1] + stride][ca], traj.xyz[history[-1]][ca]
            ca_ca = np.linalg.norm(np.diff(draw, axis=0), axis=1)
            stats.append((_rmsd(draw, true), _rmsd(draw, last), _rmsd(true, last),
                          float(np.abs(ca_ca - CA_CA_NM).max())))
        mean = np.mean(stats, axis=0)
        rows.append({"system": name, "dt_ps": 10.0 * stride, "trials": len(stats),
                     "rmsd_draw_true_nm": float(mean[0]), "rmsd_draw_last_nm": float(mean[1]),
                     "rmsd_true_last_nm": float(mean[2]), "max_ca_ca_dev_nm": float(mean[3])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="folder of reference systems NAME/ (e.g. /work/shared/data/md)")
    parser.add_argument("--systems", nargs="+", help="subset of system names (default: all)")
    parser.add_argument("--model", default="default", help="STAR-MD model folder or default")
    parser.add_argument("--dt", nargs="+", type=float, default=[10.0, 100.0, 1000.0], help="Δt values, ps")
    parser.add_argument("--trials", type=int, default=20, help="histories per system and Δt (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/jump.json")
    parser.add_argument("--md", default="benchmarks/results/jump.md")
    args = parser.parse_args()

    model, _ = load_model(args.model)
    folders = find_atlas_folders(args.data)
    if args.systems:
        folders = [f for f in folders if f.name in set(args.systems)]
    rows = []
    for folder in folders:
        for row in jump_rows(model, folder, args.dt, args.trials, args.seed):
            rows.append(row)
            print(f"{row['system']:<8} dt {row['dt_ps']:>6g} ps  draw-true {row['rmsd_draw_true_nm']:.3f}  "
                  f"draw-last {row['rmsd_draw_last_nm']:.3f}  true-last {row['rmsd_true_last_nm']:.3f}  "
                  f"max |CA-CA - 0.38| {row['max_ca_ca_dev_nm']:.3f} nm", flush=True)
    lines = ["# One model jump vs reference MD", "",
             f"Model `{args.model}`, {args.trials} held-out histories per row, raw model output (no relaxation), "
             f"{os.cpu_count()}-core CPU. CA RMSD after superposition, nm; last column: largest deviation of a "
             "bonded CA–CA distance from 0.38 nm.", "",
             "| System | Δt (ps) | draw vs true | draw vs last | true vs last (MD) | max CA–CA deviation |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['dt_ps']:g} | {r['rmsd_draw_true_nm']:.3f} | {r['rmsd_draw_last_nm']:.3f} "
              f"| {r['rmsd_true_last_nm']:.3f} | {r['max_ca_ca_dev_nm']:.3f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"model": args.model, "trials": args.trials, "rows": rows})
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
