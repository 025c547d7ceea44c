#!/usr/bin/env bash
# The violation fine-tune (2026-12-02): the shipped default of commit e7a5136 (sha256 12eb2f0b…) fine-tuned for
# 1,500 steps with the structural-violation penalty (train/violations.py) at weight W (default 30), on the
# 2-core CPU, one thread, ~11 min. Training data: every system of ../shared/data/md (chignolin R1 + R2 and
# the tetrapeptides) with the five held-out tetrapeptides FIFI, HGDD, KPRY, NVRA, WWET kept out as whole
# systems. Trajectories stay outside git.
#
#   SHARED=../shared/data/md [EXTRA_SYSTEMS="DIR/NAME ..."] bash benchmarks/train_violation.sh OUT [W] [more options]
#
# The neighbour fine-tune (2026-12-02, not shipped: README) adds --violation-neighbours; the Δt fine-tune adds
# --dt-range 100ps 1us; the corpus fine-tunes set EXTRA_SYSTEMS to the tetrapeptides of
# benchmarks/corpus_tetrapeptides.sh (batch 1: nine; batches 1 and 2: twenty-three).
set -euo pipefail
OUT=${1:?usage: train_violation.sh OUT [WEIGHT]}
WEIGHT=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
SHARED=${SHARED:-../shared/data/md}
data=$(mktemp -d)
init=$(mktemp -d)
for f in model.json model.safetensors; do git show "e7a5136:openmm_starmd/weights/$f" > "$init/$f"; done
for system in "$SHARED"/*/ ${EXTRA_SYSTEMS:-}; do ln -s "$(realpath "$system")" "$data/$(basename "$system")"; done
OMP_NUM_THREADS=1 starmd train "$data" -o "$OUT" --init "$init" --steps 1500 --batch-size 16 --lr 1e-4 --warmup 50 \
    --val-every 250 --checkpoint-every 250 --val-systems FIFI,HGDD,KPRY,NVRA,WWET --seed 0 --device cpu \
    --threads 1 --violation-weight "$WEIGHT" "$@"
