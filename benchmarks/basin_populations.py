"""Backbone basin populations of hybrid runs against the reference MD, per unseen tetrapeptide.

For each frontier run folder and system, every φ is split at 0 (φ > 0: left-handed) and every ψ into the
α band (−120° < ψ < 50°) and the rest; the two torsions whose basin occupancy differs most between the hybrid
frames and the reference MD are listed with both occupancies and the hybrid's lag-one (one jump)
autocorrelation of that basin indicator. Reads the run folders `bench_frontier.py --work` leaves.

    python benchmarks/basin_populations.py --runs shipped=/work/fr_s0 corpus=/work/fr_corpus_s0 \\
        --md benchmarks/results/basin_populations.md
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import mdtraj as md
import numpy as np

from openmm_starmd.atomic import atomic_write

SYSTEMS = ("FIFI", "HGDD", "KPRY", "NVRA", "WWET")
ROW = "jump1ns_relax-default_ctxmodel/run"


def basins(traj: md.Trajectory) -> dict[str, np.ndarray]:
    """Boolean basin indicators ``[T]`` per torsion label, e.g. ``"P2 ψ α"``."""
    seq = [r.code for r in traj.topology.residues]
    out = {}
    _, phi = md.compute_phi(traj)
    _, psi = md.compute_psi(traj)
    for i, a in enumerate(np.degrees(phi).T):
        out[f"{seq[i + 1]}{i + 2} φ>0"] = a > 0
    for i, a in enumerate(np.degrees(psi).T):
        out[f"{seq[i]}{i + 1} ψ α"] = (a > -120) & (a < 50)
    return out


def lag_one(x: np.ndarray) -> float:
    x = x.astype(float)
    return float(np.corrcoef(x[:-1], x[1:])[0, 1]) if x[:-1].std() > 0 and x[1:].std() > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="LABEL=WORK", help="frontier --work folders")
    p.add_argument("--data", default="../shared/data/md", help="reference systems NAME/ (default ../shared/data/md)")
    p.add_argument("--md", required=True, help="Markdown output")
    args = p.parse_args()
    runs = [r.split("=", 1) for r in args.runs]
    lines = ["# Backbone basins of the unseen tetrapeptides: hybrid against MD", "",
             "Per system, the two torsions whose basin occupancy differs most between the hybrid's 100 frames "
             "(1 ns jumps) and the reference MD (5 ns, 10 ps frames): φ > 0, or ψ in the α band (−120°, 50°). "
             "`ac` is the hybrid's autocorrelation of that basin indicator after one jump (MD forgets its "
             "TIC1 within 9–381 ps). `python benchmarks/basin_populations.py` reproduces it from the run folders.",
             "", "| run | system | torsion: MD / hybrid occupancy (hybrid ac after 1 ns) |", "|---|---|---|"]
    warnings.filterwarnings("ignore", module="mdtraj")
    for label, work in runs:
        for name in SYSTEMS:
            folder = Path(args.data) / name
            ref = md.load(str(folder / f"{name}_R1.xtc"), top=str(folder / f"{name}.pdb"))
            run = Path(work) / name / ROW
            gen = md.load(str(run / "traj.xtc"), top=str(run / "topology.pdb"))
            b_ref, b_gen = basins(ref), basins(gen)
            worst = sorted(b_ref, key=lambda k: -abs(b_gen[k].mean() - b_ref[k].mean()))[:2]
            cells = [f"{k}: {b_ref[k].mean():.2f} / {b_gen[k].mean():.2f} ({lag_one(b_gen[k]):+.2f})" for k in worst]
            lines.append(f"| {label} | {name} | {'; '.join(cells)} |")
    with atomic_write(args.md) as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
