#!/usr/bin/env bash
# Tetrapeptides from sequence, 5 ns each of implicit-fast MD at 300 K (10 ps frames), for the corpus
# fine-tunes (2026-12-02, README). The sequences were drawn uniformly over the 20 amino acids with Python's
# random.Random(20261202), skipping the 24 systems of ../shared/data/md (the five held-out tetrapeptides
# among them), in this order: GYLA FTIV IALS VCMF FDVD MLNS QIRV LQEP VWFP SGNH KSSH QMID, then EKKQ NPYR KKRF
# KRAP HRLG PVEE DVMG VVDR WIIP MDFQ RGTH. Batch 1 is the nine that had finished when the first corpus
# fine-tune had to start (VWFP, KSSH, QMID were stopped); batch 2 is the next fourteen of the draw, VWFP, KSSH
# and QMID first. Each system's seed is a hash of --seed and its name, so a list does not change the
# trajectories. Two shards on the 2-core CPU, one thread each, 8-12 min a peptide; rerunning resumes.
# Trajectories stay outside git.
#
#   bash benchmarks/corpus_tetrapeptides.sh OUT [BATCH]     # BATCH 1 (default) or 2; one OUT per batch
set -euo pipefail
OUT=${1:?usage: corpus_tetrapeptides.sh OUT [BATCH]}
BATCH=${2:-1}
list=$(mktemp)
case "$BATCH" in
    1) printf '%s\n' GYLA FTIV IALS VCMF FDVD MLNS QIRV LQEP SGNH > "$list" ;;
    2) printf '%s\n' VWFP KSSH QMID EKKQ NPYR KKRF KRAP HRLG PVEE DVMG VVDR WIIP MDFQ RGTH > "$list" ;;
    *) echo "corpus_tetrapeptides.sh: BATCH must be 1 or 2" >&2; exit 2 ;;
esac
for shard in 1 2; do
    OPENMM_CPU_THREADS=1 OMP_NUM_THREADS=1 starmd md "$list" -o "$OUT" --shard "$shard/2" --time 5ns --replicas 1 \
        --forcefield implicit-fast --equilibration 100ps --seed 7 --platform CPU --no-progress &
done
wait
