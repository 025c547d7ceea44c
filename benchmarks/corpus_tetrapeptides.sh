#!/usr/bin/env bash
# Nine tetrapeptides from sequence, 5 ns each of implicit-fast MD at 300 K (10 ps frames), for the corpus
# fine-tune (2026-12-02, README). The sequences were drawn uniformly over the 20 amino acids with Python's
# random.Random(20261202), skipping the 24 systems of ../shared/data/md (the five held-out tetrapeptides
# among them): GYLA FTIV IALS VCMF FDVD MLNS QIRV LQEP VWFP SGNH KSSH QMID; the nine that had finished when the
# fine-tune had to start are simulated here (VWFP, KSSH, QMID were stopped). Each system's seed is a hash of
# --seed and its name, so the list does not change the trajectories. Two shards on the 2-core CPU, one thread
# each, 8-9 min a peptide; rerunning resumes. Trajectories stay outside git.
#
#   bash benchmarks/corpus_tetrapeptides.sh OUT
set -euo pipefail
OUT=${1:?usage: corpus_tetrapeptides.sh OUT}
list=$(mktemp)
printf '%s\n' GYLA FTIV IALS VCMF FDVD MLNS QIRV LQEP SGNH > "$list"
for shard in 1 2; do
    OPENMM_CPU_THREADS=1 OMP_NUM_THREADS=1 starmd md "$list" -o "$OUT" --shard "$shard/2" --time 5ns --replicas 1 \
        --forcefield implicit-fast --equilibration 100ps --seed 7 --platform CPU --no-progress &
done
wait
