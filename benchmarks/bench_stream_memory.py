"""Peak memory of `starmd train` against corpus size: windows stream from disk, so it must not grow.

Builds two corpora of small systems under --scratch, each half ATLAS-layout folders (our tetrapeptide MD
slice, tests/data/amrv_3ns.xtc, 300 frames) and half mdCATH-schema HDF5 files (the same frames at 320 and
450 K, written by tests/mdcath_schema.py), then runs the same short `starmd train ... --workers W` on each
and polls /proc for the resident memory of the whole process tree (trainer + DataLoader workers).

    python benchmarks/bench_stream_memory.py --sizes 20 200 --steps 60 --workers 2 \
        --scratch /tmp/stream --out benchmarks/results/stream_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mdtraj as md

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT / "tests"))
from mdcath_schema import write_mdcath  # noqa: E402  (the tests' schema-exact writer)


def build_corpus(folder: Path, size: int) -> Path:
    """``size`` systems: even ones ATLAS folders SYS_i, odd ones mdCATH files of domain DOM_i."""
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    traj = md.load(str(DATA / "amrv_3ns.xtc"), top=str(DATA / "amrv.pdb"))
    for i in range(size):
        if i % 2 == 0:
            system = folder / f"SYS{i:04d}"
            system.mkdir()
            shutil.copy(DATA / "amrv.pdb", system / f"SYS{i:04d}.pdb")
            shutil.copy(DATA / "amrv_3ns.xtc", system / f"SYS{i:04d}_R1.xtc")
            (system / f"SYS{i:04d}_R1.json").write_text(json.dumps({"stride_ps": 10.0, "temperature_k": 300.0}))
        else:
            write_mdcath(folder / f"mdcath_dataset_DOM{i:04d}.h5", f"DOM{i:04d}", DATA / "amrv.pdb",
                         {(320, 0): traj.xyz[:150], (450, 0): traj.xyz[150:]})
    (folder / "done").write_text("")
    return folder


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; peak summed RSS of its process tree (MB), per-process peaks, wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_total, peak_each = 0, {}
    while proc.poll() is None:
        tree, frontier = [proc.pid], [proc.pid]
        while frontier:
            frontier = [c for p in frontier for c in _children(p)]
            tree += frontier
        peak_total = max(peak_total, sum(_status_kb(p, "VmRSS") for p in tree))
        for p in tree:
            peak_each[p] = max(peak_each.get(p, 0), _status_kb(p, "VmHWM"))
        time.sleep(0.2)
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{output[-2000:]}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_tree_mb": peak_total / 1024,
            "peak_rss_per_process_mb": sorted((v / 1024 for v in peak_each.values() if v), reverse=True),
            "output_tail": output.strip().splitlines()[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rows = []
    for size in args.sizes:
        corpus = build_corpus(args.scratch / f"corpus{size}", size)
        files = sum(f.stat().st_size for f in corpus.rglob("*") if f.is_file())
        model = args.scratch / f"model{size}"
        cmd = [sys.executable, "-m", "openmm_starmd.cli", "train", str(corpus), "-o", str(model),
               "--preset", "tiny", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--threads", "1", "--val-every", str(args.steps),
               "--val-system-fraction", "0.1", "--temperature-condition", "--overwrite"]
        row = {"systems": size, "corpus_mb": files / 1e6, **run_measured(cmd, env)}
        rows.append(row)
        print(f"{size:5d} systems ({row['corpus_mb']:.1f} MB on disk): peak RSS {row['peak_rss_tree_mb']:.0f} MB "
              f"(processes {', '.join(f'{m:.0f}' for m in row['peak_rss_per_process_mb'])}), {row['wall_s']:.0f} s")
    result = {"command": " ".join(sys.argv), "steps": args.steps, "batch_size": args.batch_size,
              "workers": args.workers, "load_average": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
