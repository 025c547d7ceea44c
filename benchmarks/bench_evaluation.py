"""Cost of one jump of the shipped model, traced (TorchScript, the default) against eager, by protein size.

For each N (residues of a random-walk chain) it fills a rollout's history to the window, then times
``--repeats`` jumps of ``--jump`` (drawn in the model's own steps: the shipped 1 ns is four 250 ps steps of 20
sampler steps, one step for a chain longer than ``max_step_residues``) with ``Rollout(traced=True)`` and
``traced=False`` from the same history and seed, and reports the median ms per jump, the speed-up and the
largest difference between the two draws (nm). Writes JSON and Markdown, naming the commit of the checkout it
imported. Run against an older checkout (``PYTHONPATH=OLD``) for a before/after comparison; where that
``Rollout`` has no ``traced`` argument, it times that code's (eager) jumps alone.

Example::

    OPENMM_CPU_THREADS=1 python benchmarks/bench_evaluation.py --sizes 4 10 50 200 \\
        --json benchmarks/results/evaluation_cost.json --md benchmarks/results/evaluation_cost.md
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

import openmm_starmd
from openmm_starmd import load_model
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.frames.rigid import random_rotations
from openmm_starmd.rollout import Rollout


def _chain(N: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of a random-walk chain: rotations ``[N, 3, 3]``, CA ``[N, 3]`` nm, 0.38 nm apart."""
    step = torch.randn(N, 3, generator=generator)
    trans = torch.cumsum(0.38 * step / step.norm(dim=-1, keepdim=True), 0)
    return random_rotations((N,), generator), trans


def _code_revision() -> str:
    """The git commit of the checkout ``openmm_starmd`` was imported from (``unknown`` outside git)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(openmm_starmd.__file__).parent), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _row(model: torch.nn.Module, N: int, jump_ps: float, repeats: int) -> dict:
    rot, trans = _chain(N, torch.Generator().manual_seed(N))
    kinds = {"residue_type": torch.arange(N) % 20, "residue_index": torch.arange(N),
             "residue_mask": torch.ones(N, dtype=torch.bool), "chain_break": torch.zeros(N, dtype=torch.bool)}
    out: dict = {"N": N}
    draws = {}
    can_trace = "traced" in inspect.signature(Rollout).parameters
    for traced in (True, False) if can_trace else (False,):
        ro = Rollout(model, **kinds, **({"traced": traced} if can_trace else {}))
        ro.push(rot, trans)
        gen = torch.Generator().manual_seed(0)
        while ro.count < ro.window:  # fill the history (the traced path starts here)
            ro.push(*ro.sample(jump_ps, gen))
        times = []
        for _ in range(repeats + 1):  # the first jump is a warm-up (the trace is built while filling)
            start = time.perf_counter()
            r, t = ro.sample(jump_ps, gen)
            times.append(time.perf_counter() - start)
            ro.push(r, t)
        draws[traced] = t
        out["traced_ms" if traced else "eager_ms"] = 1000 * statistics.median(times[1:])
    if can_trace:
        out["speedup"] = out["eager_ms"] / out["traced_ms"]
        out["max_draw_difference_nm"] = float((draws[True] - draws[False]).abs().max())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 10, 50, 200], help="residue counts N")
    p.add_argument("--jump", type=float, default=1000.0, help="jump (ps, default 1000)")
    p.add_argument("--repeats", type=int, default=5, help="timed jumps per row (default 5)")
    p.add_argument("--json", default="evaluation_cost.json")
    p.add_argument("--md", default="evaluation_cost.md")
    args = p.parse_args()
    if min(args.sizes) < 1 or args.repeats < 1 or not args.jump > 0:
        p.error("sizes and repeats must be at least 1 and the jump positive")
    torch.set_num_threads(1)
    model, _ = load_model("default", device="cpu")
    rows = []
    for N in args.sizes:
        rows.append(_row(model, N, args.jump, args.repeats))
        print(rows[-1], flush=True)
    meta = {"package": str(Path(inspect.getfile(Rollout)).parent),
            "model": "default", "jump_ps": args.jump, "max_step_ps": model.config.max_step_ps,
            "max_step_residues": model.config.max_step_residues, "code": _code_revision(),
            "sampler_steps": model.config.num_sampler_steps, "torch_threads": 1, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "load_1min": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d")}
    atomic_write_json(Path(args.json), {"meta": meta, "rows": rows})
    longest = (f" for chains of at most {meta['max_step_residues']} residues (one step a jump above)"
               if meta["max_step_residues"] else "")
    lines = [f"# One jump of the shipped model: traced against eager ({meta['date']})", "",
             f"{args.jump:g} ps jump in model steps of {meta['max_step_ps']:g} ps{longest}, {meta['sampler_steps']} "
             f"sampler steps each, code {meta['code']}, 1 torch thread, history filled to the window; median of "
             f"{args.repeats} jumps (load {meta['load_1min']:.1f} at the end). "
             "`python benchmarks/bench_evaluation.py` reproduces it.", "",
             "| N residues | traced ms/jump | eager ms/jump | speed-up | max draw difference nm |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['N']} | {r.get('traced_ms', float('nan')):.0f} | {r['eager_ms']:.0f} | "
              f"{r.get('speedup', float('nan')):.2f}× | {r.get('max_draw_difference_nm', float('nan')):.1e} |"
              for r in rows]
    with atomic_write(args.md) as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
