"""Side chains placed from the χ head vs carried rigidly, with the same weights (chignolin, 1 ns jumps).

Variants of one χ-head model: ``rigid`` (the χ head removed, so every atom moves with its residue frame),
``chi`` (what ships: χ drawn and placed where it adds no heavy-atom overlap) and ``chi_blind`` (χ placed
without that check). Each row runs ``starmd simulate``'s driver and then ``starmd validate`` against both
reference replicas (size-matched), and records raw validity, rejections and χ1/χ2/φψ/PC/RMSF/TIC1 figures.

    python benchmarks/bench_sidechains.py --model default --variant chi --seed 0 --work /tmp/sidechains
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.cli import main as cli
from openmm_starmd.model.checkpoint import load_model, save_model
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.simulation.run import run_simulation
from openmm_starmd.simulation.sidechains import SideChains

REF = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "md" / "CLN025"


def variant_models(model: str, work: Path) -> dict[str, Path]:
    """The model with its χ head (``chi``) and the same weights without it (``rigid``), saved under ``work``."""
    net, config = load_model(model, "cpu")
    if not config.chi_head:
        raise SystemExit(f"{model} has no χ head: nothing to compare")
    folders = {"chi": work / "model_chi", "rigid": work / "model_rigid"}
    save_model(folders["chi"], net, metadata={"source": str(model)})
    rigid = StarMDNetwork(config.replace(chi_head=False))
    rigid.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("chi_head.")})
    save_model(folders["rigid"], rigid, metadata={"source": str(model), "chi_head": "removed"})
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a χ-head model folder or default")
    parser.add_argument("--variant", choices=["rigid", "chi", "chi_blind"], required=True)
    parser.add_argument("--time-ns", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default=str(REF), help="folder with CLN025.pdb, CLN025_R1/R2.xtc")
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work, ref = Path(args.work), Path(args.reference)
    work.mkdir(parents=True, exist_ok=True)
    models = variant_models(args.model, work)
    if args.variant == "chi_blind":  # the ablation: every draw kept, overlaps and all
        SideChains.place = lambda self, positions, chi, clash_nm=0.0: self.set_chi(positions, chi)
    name = f"{args.variant}_s{args.seed}"
    run = work / f"run_{name}"
    start = time.perf_counter()
    run_simulation(ref / "CLN025.pdb", run, time_ps=args.time_ns * 1000.0, jump_ps=1000.0,
                   model=str(models["rigid" if args.variant == "rigid" else "chi"]), seed=args.seed, device="cpu",
                   progress=False, overwrite=True)
    wall = time.perf_counter() - start
    check = work / f"validate_{name}"
    cli(["validate", str(run / "traj.xtc"), "--ref", str(ref / "CLN025_R1.xtc"), str(ref / "CLN025_R2.xtc"),
         "--top", str(ref / "CLN025.pdb"), "--gen-top", str(run / "topology.pdb"), "--out", str(check),
         "--lag", "1ns", "--overwrite"])
    record = json.loads((run / "run.json").read_text())
    metrics = json.loads((check / "metrics.json").read_text())
    sm = metrics["size_matched"]
    row = {"variant": args.variant, "seed": args.seed, "model": args.model, "wall_s": wall,
           "side_chains": record["settings"]["side_chains"], "ns_per_day": record["speed"]["ns_per_day"],
           "validity": record["validity"], "rejections": {k: v for k, v in record["rejections"].items() if v},
           "chi1_jsd": metrics["metrics"]["chi1_jsd"]["value"],
           "chi1_jsd_floor": metrics["metrics"]["chi1_jsd"]["md_vs_md_floor"],
           "chi2_jsd": metrics["metrics"]["chi2_jsd"]["value"],
           "chi2_jsd_floor": metrics["metrics"]["chi2_jsd"]["md_vs_md_floor"],
           "size_matched": sm if "skipped" in sm else {k: sm[k] for k in ("generated", "md", "ratio", "target")}}
    atomic_write_json(work / f"row_{name}.json", row)
    print(json.dumps({k: row[k] for k in ("variant", "seed", "validity", "rejections", "chi1_jsd", "chi2_jsd")}))


if __name__ == "__main__":
    main()
