"""Speed of ``starmd validate`` on a long generated trajectory of a ~20-residue protein.

Builds a 20-residue, two-chain test protein by placing two copies of a 10-residue trajectory side by
side (the second copy shifted in time so the chains move independently), tiles its frames to
``--frames`` generated frames, and validates it against two reference replicas. Times the metric
computation and the full command (loading, metrics, plots, writing). Prints a table and writes JSON.

    python benchmarks/bench_validate.py tests/data/cln025.pdb tests/data/cln025_3ns.xtc --frames 10000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mdtraj as md
import numpy as np

from openmm_starmd.analysis.compare import compare_ensembles
from openmm_starmd.analysis.report import validate


def two_chain_protein(traj: md.Trajectory, frames: int, shift: int) -> md.Trajectory:
    """Two copies of ``traj`` 3 nm apart, the second ``shift`` frames ahead, tiled to ``frames``."""
    idx = np.arange(frames) % traj.n_frames
    first = traj[idx]
    second = traj[(idx + shift) % traj.n_frames]
    second.xyz += np.array([3.0, 0.0, 0.0], dtype=np.float32)
    both = first.stack(second)
    both.time = np.arange(frames) * float(traj.timestep)
    return both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdb", help="topology of the 10-residue trajectory, e.g. tests/data/cln025.pdb")
    parser.add_argument("xtc", help="its trajectory, e.g. tests/data/cln025_3ns.xtc")
    parser.add_argument("--frames", type=int, default=10000, help="generated frames (default 10000)")
    parser.add_argument("--json", default="bench_validate.json", help="output JSON path")
    args = parser.parse_args()
    traj = md.load(args.xtc, top=args.pdb)
    gen = two_chain_protein(traj, args.frames, shift=traj.n_frames // 3)
    refs = [two_chain_protein(traj, traj.n_frames, shift=s) for s in (traj.n_frames // 2, traj.n_frames // 5)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen[0].save_pdb(str(tmp / "top.pdb"))
        gen.save_xtc(str(tmp / "gen.xtc"))
        for k, ref in enumerate(refs):
            ref.save_xtc(str(tmp / f"ref{k}.xtc"))
        start = time.perf_counter()
        compare_ensembles([gen], refs, lag=10, dt_ps=float(traj.timestep), progress=False)
        rows.append({"stage": "metrics (compare_ensembles)", "wall_s": round(time.perf_counter() - start, 2)})
        start = time.perf_counter()
        validate([tmp / "gen.xtc"], [tmp / f"ref{k}.xtc" for k in range(len(refs))], tmp / "top.pdb",
                 tmp / "out", lag="100ps", progress=False)
        rows.append({"stage": "full validate (load, metrics, plots, write)",
                     "wall_s": round(time.perf_counter() - start, 2)})
    print(f"{gen.n_residues} residues, {gen.n_atoms} atoms, {gen.n_frames} generated frames, "
          f"{sum(r.n_frames for r in refs)} reference frames")
    print(f"{'stage':<46} {'wall/s':>8}")
    for row in rows:
        print(f"{row['stage']:<46} {row['wall_s']:>8.2f}")
    report = {"residues": gen.n_residues, "atoms": gen.n_atoms, "generated_frames": gen.n_frames,
              "reference_frames": [r.n_frames for r in refs], "cpu_count": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "rows": rows}
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
