#!/bin/bash
# Does a seed repeat a hybrid run exactly? Two `starmd simulate` runs of one seed at OpenMM's default CPU
# threads, two with OPENMM_CPU_THREADS=1; prints the largest atom distance between the two runs per frame (nm).
#   benchmarks/thread_reproducibility.sh [PDB] [WORK]   (default: HGDD of ../shared/data/md, /tmp/thread_repro)
set -euo pipefail
PDB=${1:-../shared/data/md/HGDD/HGDD.pdb}
WORK=${2:-/tmp/thread_repro}
[ -f "$PDB" ] || { echo "error: no structure at $PDB: give a PDB file as the first argument" >&2; exit 2; }
mkdir -p "$WORK"
for k in a b; do
  starmd simulate "$PDB" -o "$WORK/default_$k" --time 4ns --jump 1ns --seed 0 --platform CPU --overwrite --no-progress
  OPENMM_CPU_THREADS=1 starmd simulate "$PDB" -o "$WORK/one_$k" --time 4ns --jump 1ns --seed 0 --platform CPU \
    --overwrite --no-progress
done
python - "$WORK" <<'PY'
import sys
import mdtraj as md
import numpy as np
work = sys.argv[1]
for label in ("default", "one"):
    a, b = (md.load(f"{work}/{label}_{k}/traj.xtc", top=f"{work}/{label}_{k}/topology.pdb") for k in "ab")
    dist = [float(np.linalg.norm(a.xyz[i] - b.xyz[i], axis=-1).max()) for i in range(min(len(a), len(b)))]
    threads = "OpenMM default CPU threads" if label == "default" else "OPENMM_CPU_THREADS=1"
    print(f"{threads}: largest atom distance between the two runs per frame (nm):", " ".join(f"{x:.3g}" for x in dist))
PY
