"""Speed of featurising trajectories (backbone frames + torsions), in frames per second.

Uses /work/shared/data/md/CLN025 (1800 frames) when present, else tests/data (300 frames). Each stage
is timed ``--repeats`` times and the best run is reported, together with the machine load (the
numbers are only comparable on an idle machine). Prints a table and writes JSON.

    python benchmarks/bench_featurize.py --json bench_featurize.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import mdtraj as md
import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.data import TrajectoryWindows, load_backbone_trajectory
from openmm_starmd.frames.protein import frames_from_positions, torsions

SHARED = Path("/work/shared/data/md/CLN025")
TESTS = Path(__file__).resolve().parent.parent / "tests" / "data"


def _source() -> tuple[Path, Path]:
    if (SHARED / "CLN025.pdb").is_file() and (SHARED / "CLN025_R1.xtc").is_file():
        return SHARED / "CLN025.pdb", SHARED / "CLN025_R1.xtc"
    return TESTS / "cln025.pdb", TESTS / "cln025_3ns.xtc"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (default 3)")
    parser.add_argument("--items", type=int, default=200, help="dataset items timed (default 200)")
    parser.add_argument("--json", default="bench_featurize.json", help="output JSON path")
    args = parser.parse_args()

    pdb, xtc = _source()
    traj = md.load(str(xtc), top=str(pdb))
    top, xyz = traj.topology, traj.xyz
    T = traj.n_frames
    rows = []

    def row(stage: str, seconds: float, count: int, unit: str = "frames") -> None:
        rows.append({"stage": stage, unit: count, "seconds": seconds, f"{unit}_per_s": count / seconds})

    row("read xtc (mdtraj)", _best(lambda: md.load(str(xtc), top=str(pdb)), args.repeats), T)
    row("frames_from_positions", _best(lambda: frames_from_positions(xyz, top), args.repeats), T)
    row("torsions (7 per residue)", _best(lambda: torsions(xyz, top), args.repeats), T)
    row("load_backbone_trajectory", _best(lambda: load_backbone_trajectory(xtc, top), args.repeats), T)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "CLN"
        folder.mkdir()
        shutil.copy(pdb, folder / "CLN.pdb")
        shutil.copy(xtc, folder / "CLN_R1.xtc")
        ds = TrajectoryWindows([folder], window=8, max_stride=100, random_rigid=True, items_per_epoch=args.items)
        ds[0]  # featurise once; items then come from the cache
        row("dataset item K=8 (cached)", _best(lambda: [ds[i] for i in range(len(ds))], args.repeats),
            args.items, unit="items")

    meta = {
        "source": str(xtc),
        "n_frames": T,
        "n_atoms": traj.n_atoms,
        "n_residues": top.n_residues,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    print(f"source {xtc} ({T} frames, {top.n_residues} residues, {traj.n_atoms} atoms); "
          f"torch threads {meta['torch_threads']}, load average {meta['load_average_1min']:.1f}")
    print(f"{'stage':<30} {'count':>7} {'seconds':>9} {'per second':>12}")
    for r in rows:
        unit = "items" if "items" in r else "frames"
        print(f"{r['stage']:<30} {r[unit]:>7} {r['seconds']:>9.4f} {r[unit + '_per_s']:>12.0f}")
    atomic_write_json(args.json, {"meta": meta, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
