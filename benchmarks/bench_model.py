"""Benchmark of STAR-MD rollouts: time per jump, peak memory, and constant cost over long rollouts.

For each N (residues) and K (window) it prints the wall time of one jump (all sampler steps, cached
history of K frames), the peak memory, and the ratio time(jump 1000)/time(jump 10) of one rollout
(each the fastest of 10 neighbouring jumps, run with ``--ratio-steps`` sampler steps to keep the
long rollout affordable; the target is ≤ 1.05). Writes the table as JSON too.

Examples::

    python benchmarks/bench_model.py --sizes 10 50            # quick subset
    python benchmarks/bench_model.py                         # full table (N 10..500, K 4/8/16)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.frames.rigid import random_rotations, so3_exp
from openmm_starmd.model.config import preset
from openmm_starmd.model.network import StarMDNetwork
from openmm_starmd.rollout import Rollout


def _peak_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak of this row, or the process's lifetime peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB; process-lifetime peak


def _chain(N: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random-walk chain: rotations [N,3,3], CA translations [N,3] nm, 0.38 nm apart."""
    step = torch.randn(N, 3, generator=generator)
    step = 0.38 * step / step.norm(dim=-1, keepdim=True)
    return random_rotations((N,), generator), torch.cumsum(step, 0)


def _rollout(net: StarMDNetwork, N: int, K: int, steps: int, device: torch.device) -> Rollout:
    z = torch.zeros(N, dtype=torch.long)
    return Rollout(net, z, torch.arange(N), torch.ones(N, dtype=torch.bool), z.bool(), window=K, num_steps=steps)


def _timed_jump(ro: Rollout, gen: torch.Generator, device: torch.device, cpu_time: bool = False) -> float:
    """Seconds of one jump (sample + push): wall time, or this process's CPU time if ``cpu_time``."""
    clock = time.process_time if cpu_time else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    rot, trans = ro.sample(1000.0, gen)
    ro.push(rot, trans)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - t0


def bench_row(net: StarMDNetwork, N: int, K: int, steps: int, ratio_steps: int, long: int, repeats: int,
              device: torch.device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    rot, trans = _chain(N, torch.Generator().manual_seed(N))
    ro = _rollout(net, N, K, steps, device)
    for k in range(K):  # fill the window: history of K frames
        ro.push(rot @ so3_exp(0.05 * k * torch.ones(N, 3)), trans)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _timed_jump(ro, gen, device)  # warm-up
    times = [_timed_jump(ro, gen, device) for _ in range(repeats)]
    cache_bytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in ro.cache.layers)
    row = {"N": N, "K": K, "sampler_steps": steps, "jump_s": statistics.median(times), "peak_mb": _peak_mb(device),
           "kv_cache_mb": cache_bytes / 2**20}
    if long > 0:
        ro = _rollout(net, N, K, ratio_steps, device)
        for k in range(K):  # start with a full window, so jump 10 and jump 1000 attend to the same K frames
            ro.push(rot @ so3_exp(0.05 * k * torch.ones(N, 3)), trans)
        early, late = [], []
        # On CPU the ratio uses this process's CPU time, which other processes sharing the cores do
        # not inflate (wall time on a shared machine varies by several x between minutes).
        for j in range(1, long + 3):
            t = _timed_jump(ro, gen, device, cpu_time=device.type == "cpu")
            if 6 <= j <= 15:
                early.append(t)
            if j >= long - 7:
                late.append(t)
        # minimum over 10 neighbouring jumps: robust to other processes stealing the CPU
        row["ratio_1000_10"] = min(late) / min(early)
        row["ratio_jumps"] = long
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200, 500], help="residue counts N")
    p.add_argument("--windows", type=int, nargs="+", default=[4, 8, 16], help="window lengths K")
    p.add_argument("--preset", default="small", help="model preset (default small)")
    p.add_argument("--steps", type=int, help="sampler steps per jump (default: the preset's)")
    p.add_argument("--ratio-steps", type=int, default=1, help="sampler steps in the long ratio rollout (default 1)")
    p.add_argument("--long", type=int, default=1000, help="jumps of the ratio rollout (0 skips it; default 1000)")
    p.add_argument("--ratio-sizes", type=int, nargs="*", help="run the ratio rollout only for these N")
    p.add_argument("--repeats", type=int, default=3, help="timed jumps per row (default 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="bench_model.json", help="output JSON path")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    print(f"{'N':>5} {'K':>3} {'steps':>5} {'jump s':>9} {'peak MB':>9} {'cache MB':>9} {'t1000/t10':>10}")
    for N in sorted(args.sizes):
        for K in args.windows:
            cfg = preset(args.preset, window=K)
            net = StarMDNetwork(cfg).to(device).eval()
            steps = cfg.num_sampler_steps if args.steps is None else args.steps
            long = args.long if args.ratio_sizes is None or N in args.ratio_sizes else 0
            row = bench_row(net, N, K, steps, args.ratio_steps, long, args.repeats, device)
            row["device"] = str(device)
            row["preset"] = args.preset
            rows.append(row)
            ratio = f"{row['ratio_1000_10']:.3f}" if "ratio_1000_10" in row else "-"
            print(f"{N:>5} {K:>3} {steps:>5} {row['jump_s']:>9.4f} {row['peak_mb']:>9.1f} {row['kv_cache_mb']:>9.2f} "
                  f"{ratio:>10}", flush=True)
    atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
