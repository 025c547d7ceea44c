"""Raw validity of hybrid proposals for several models and seeds on one system (what fine-tunes change).

Runs ``starmd simulate``'s code (default relaxation and guards, the model's own sampler and χ draws) for
``--jumps`` jumps per (model, seed) and reads each run's ``run.json``: raw validity (proposals mapped to atoms
with side chains placed, before guards and relaxation, scored by ``starmd validate``'s criteria), failures by
cause, rejection rate. Runs are cached in ``--work`` (resumed, or reused when the run.json names the same model
and χ draws); the table goes to ``--md``/``--json``.

    OPENMM_CPU_THREADS=1 python benchmarks/bench_raw_validity.py --models default /path/ft_a --seeds 0 1 \\
        --work /tmp/raw --md benchmarks/results/raw_validity.md --json benchmarks/results/raw_validity.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.model.checkpoint import DEFAULT_MODEL, model_folder, read_model_json
from openmm_starmd.model.config import ModelConfig
from openmm_starmd.simulation.run import run_simulation


def _same_model(settings: dict, model: str) -> bool:
    """Whether a cached run used ``model``: the same folder (or name) and the same χ draws of its model.json
    (the shipped model.json changes without its folder changing)."""
    folder = model_folder(model)
    chi = ModelConfig.from_dict(read_model_json(folder)["config"]).chi_draw_setting()
    name = model if model == DEFAULT_MODEL else str(folder.resolve())
    return settings.get("model") == name and settings.get("model_chi_draws") == chi


def one_run(pdb: Path, work: Path, model: str, seed: int, jumps: int, jump_ps: float) -> dict:
    """The run.json of ``jumps`` hybrid jumps of ``model`` from ``pdb`` with ``seed`` (reused when done with the
    same model)."""
    run_dir = work / f"{Path(model).name}_seed{seed}"
    record = run_dir / "run.json"
    if record.is_file():
        old = json.loads(record.read_text())
        if old["jumps_done"] >= jumps and old["settings"]["seed"] == seed and _same_model(old["settings"], model):
            return old
    run_simulation(pdb, run_dir, time_ps=jumps * jump_ps, jump_ps=jump_ps, model=model, seed=seed,
                   overwrite=True, progress=False)
    return json.loads(record.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", default="../shared/data/md/CLN025/CLN025.pdb", help="input structure")
    parser.add_argument("--models", nargs="+", default=["default"], help="model folders or default")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jumps", type=int, default=100)
    parser.add_argument("--jump-ps", type=float, default=1000.0)
    parser.add_argument("--work", required=True, help="folder for the runs (outside git)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--md", required=True)
    parser.add_argument("--note", default="", help="a paragraph for the Markdown: what the models are")
    args = parser.parse_args()
    pdb, work = Path(args.system), Path(args.work)
    if not pdb.is_file():
        parser.error(f"{pdb} not found: pass --system PATH to a PDB file")
    rows = []
    for model in args.models:
        for seed in args.seeds:
            start = time.perf_counter()
            record = one_run(pdb, work, model, seed, args.jumps, args.jump_ps)
            v = record["validity"]
            rows.append({"model": Path(model).name, "seed": seed, "proposals": v["raw_proposals"],
                         "raw_valid": v["raw_valid"],
                         "raw_valid_fraction": v["raw_valid_fraction"], "raw_failures": v["raw_failures"],
                         "rejection_rate": v["rejection_rate"], "wall_s": time.perf_counter() - start})
            print(f"{model} seed {seed}: raw valid {v['raw_valid_fraction']:.0%} of {v['raw_proposals']}, "
                  f"{v['raw_failures']}", flush=True)
    atomic_write_json(Path(args.json), {"system": str(pdb), "jumps": args.jumps, "jump_ps": args.jump_ps,
                                        "note": args.note, "rows": rows})
    lines = [f"# Raw validity of hybrid proposals: {pdb.stem}, {args.jumps} jumps of {args.jump_ps:g} ps", "",
             *([args.note, ""] if args.note else []),
             "Default relaxation and guards; raw = the proposal mapped to atoms with side chains placed, before "
             "guards and relaxation, scored by `starmd validate`'s criteria.", "",
             "| model | seed | raw valid | CA–CA breaks | heavy-atom clashes | CA clashes | rejection rate |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["raw_failures"]
        lines.append(f"| {r['model']} | {r['seed']} | {r['raw_valid_fraction']:.0%} of {r['proposals']:g} | "
                     f"{f.get('ca_break', 0)} | {f.get('heavy_clash', 0)} | {f.get('ca_clash', 0)} | "
                     f"{r['rejection_rate']:.0%} |")
    with atomic_write(Path(args.md)) as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
