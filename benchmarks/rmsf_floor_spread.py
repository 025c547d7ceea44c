"""How far MD's own CA-RMSF correlation moves between 100-frame samples (chignolin, size-matched setting).

The frontier scores N = 100 generated frames' per-residue CA RMSF against the reference's second halves (Pearson r,
goal >= 0.8) beside one MD floor: the first halves evenly thinned to N. This script asks how much that floor itself
depends on which N frames are taken: every offset of the even thinning, and ``--draws`` sets of N frames drawn at
random (``--seed``) from the pooled first halves, each scored against the same second halves.

    python benchmarks/rmsf_floor_spread.py --json benchmarks/results/rmsf_floor_spread.json \\
        --md benchmarks/results/rmsf_floor_spread.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mdtraj as md
import numpy as np

from openmm_starmd.analysis.ensemble import compare_ensemble, fit_ensemble_reference
from openmm_starmd.analysis.size_matched import even_indices
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.sources import atlas_system
from openmm_starmd.errors import StarMDError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="../shared/data/md/CLN025", help="ATLAS folder of the reference")
    parser.add_argument("--frames", type=int, default=100, help="frames per sample (default 100, the frontier's N)")
    parser.add_argument("--draws", type=int, default=40, help="random samples (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/rmsf_floor_spread.json")
    parser.add_argument("--md", default="benchmarks/results/rmsf_floor_spread.md")
    args = parser.parse_args()

    folder = Path(args.reference)
    try:
        system = atlas_system(folder)
    except StarMDError as exc:
        raise SystemExit(f"error: {exc}") from None
    replicas = [md.load(str(r.path), top=str(system.topology_path)) for r in system.replicas]
    seconds = [t[t.n_frames // 2:] for t in replicas]
    pool = md.join([t[: t.n_frames // 2] for t in replicas])
    target = fit_ensemble_reference(seconds)
    n, k = pool.n_frames, args.frames

    def score(idx: np.ndarray) -> float:
        return float(compare_ensemble(target, pool[idx], pairwise=False, w2=False)["rmsf_pearson_r"])

    floor = score(even_indices(n, k))  # the frontier's own thinning
    stride = n / k
    thinned = [score(np.minimum((np.arange(k) * stride + off).astype(int), n - 1)) for off in range(int(stride))]
    rng = np.random.default_rng(args.seed)
    drawn = [score(np.sort(rng.choice(n, k, replace=False))) for _ in range(args.draws)]
    result = {"reference": str(folder), "replicas": len(replicas), "first_half_frames": n, "frames": k,
              "frontier_floor": floor, "thinned_offsets": thinned, "random_draws": drawn, "seed": args.seed}
    atomic_write_json(Path(args.json), result)
    d = np.array(drawn)
    lines = [f"# MD's own RMSF r between {k}-frame samples ({folder.name})", "",
             f"{len(replicas)} replicas; first halves pooled ({n} frames), scored against the second halves as in the "
             "frontier's size-matched comparison. `python benchmarks/rmsf_floor_spread.py` reproduces it.", "",
             "| sample | RMSF r | below 0.8 |", "|---|---|---|",
             f"| the frontier's floor (first halves thinned to {k}, ends kept) | {floor:.3f} | – |",
             f"| evenly thinned, every {stride:.1f}th frame from offsets 0–{len(thinned) - 1} | "
             + " ".join(f"{x:.3f}" for x in thinned) + f" | {sum(x < 0.8 for x in thinned)} of {len(thinned)} |",
             f"| {args.draws} random sets of {k} frames (seed {args.seed}) | min {d.min():.3f}, median "
             f"{np.median(d):.3f}, max {d.max():.3f} | {int((d < 0.8).sum())} of {args.draws} |", ""]
    with atomic_write(Path(args.md)) as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
