"""One table of several ``bench_frontier.py`` runs that differ in the model's sampler (or anything else).

Each run is given as ``LABEL=FRONTIER.json``; every row of every run becomes a line with what decides the
issue-13 goals that a sampler moves: raw validity and its failures, the tetrapeptide TIC1 check, φ/ψ, χ1, PC
JSD against the size-matched floor, RMSF r, energy sd ratio, and the speed-up (comparable only between runs
made alone on one machine: the header of each source says its load).

Example::

    python benchmarks/sampler_study.py sde=frontier.json "ode=frontier_ode.json" \\
        --json benchmarks/results/sampler_study.json --md benchmarks/results/sampler_study.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frontier_report import CHIGNOLIN, fmt, tic1_check  # sibling benchmark script, not a package

from openmm_starmd.atomic import atomic_write, atomic_write_json


def study_row(label: str, seed: int, row: dict) -> dict:
    """The sampler-relevant figures of one frontier row."""
    run, sm = row["run"], row.get("size_matched", {})
    ratio = sm.get("ratio", {})
    tic = None if row["system"] == CHIGNOLIN or not sm else tic1_check(row)
    return {
        "setting": label, "seed": seed, "system": row["system"], "frames": row.get("frames"),
        "raw_valid_fraction": run.get("raw_valid_fraction"), "raw_failures": run.get("raw_failures", {}),
        "rejection_rate": run.get("rejection_rate"), "speedup": row.get("speedup"),
        "model_share": row.get("hybrid", {}).get("model_share"),
        "torsion_jsd_ratio": ratio.get("torsion_jsd"), "chi1_jsd_ratio": ratio.get("chi1_jsd"),
        "pc_jsd_ratio": ratio.get("pc_jsd"),
        "rmsf_r": sm.get("generated", {}).get("rmsf_pearson_r"),
        "energy_sd_ratio": sm.get("generated", {}).get("energy_sd_ratio"),
        "tic1": tic,
    }


def markdown(rows: list[dict], sources: dict[str, str]) -> str:
    lines = ["# Sampler study", "",
             "Rows of `bench_frontier.py` runs (1 ns jumps unless the source says otherwise); ratios are to the "
             "size-matched MD floor. Speed-ups of runs that shared the CPU are not comparable with each other.", "",
             "| Setting | Seed | System | Raw valid | CA breaks | heavy clashes | φ/ψ | χ1 | PC | RMSF r | energy sd "
             "| TIC1 τ (ps) | TIC1 bounds (ps) | TIC1 within | Speed-up | Model share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fails, tic = r["raw_failures"], r["tic1"] or {}
        bounds = "-".join(fmt(b, 0) for b in tic["bounds_ps"]) if "bounds_ps" in tic else "n/a"
        within = ("yes" if tic.get("met") else "no") if tic else "n/a"
        lines.append(
            f"| {r['setting']} | {r['seed']} | {r['system']} | {fmt(r['raw_valid_fraction'], 2)} | "
            f"{fails.get('ca_break', '-')} | {fails.get('heavy_clash', '-')} | {fmt(r['torsion_jsd_ratio'], 2)} | "
            f"{fmt(r['chi1_jsd_ratio'], 2)} | {fmt(r['pc_jsd_ratio'], 2)} | {fmt(r['rmsf_r'], 3)} | "
            f"{fmt(r['energy_sd_ratio'], 2)} | {fmt(tic.get('gen_tau_ps'), 0) if tic else 'n/a'} | {bounds} | "
            f"{within} | {fmt(r['speedup'], 1)} | {fmt(r['model_share'], 2)} |")
    lines += ["", "Sources:", ""] + [f"- {label}: {header}" for label, header in sources.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=FRONTIER.json, in table order")
    parser.add_argument("--json", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    rows, sources = [], {}
    for item in args.runs:
        label, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"give each run as LABEL=FRONTIER.json (an existing file), got {item!r}")
        data = json.loads(Path(path).read_text())
        seed = data["rows"][0]["key"]["seed"] if data["rows"] else None
        rows += [study_row(label, seed, r) for r in data["rows"]]
        sources[f"{label} (seed {seed})"] = data["header"]
    atomic_write_json(args.json, {"rows": rows, "sources": sources})
    with atomic_write(args.md) as handle:
        handle.write(markdown(rows, sources))
    print(markdown(rows, sources))


if __name__ == "__main__":
    main()
