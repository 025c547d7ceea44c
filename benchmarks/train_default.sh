#!/usr/bin/env bash
# Reproduces the shipped default model (openmm_starmd/weights/): `small` preset trained on every reference
# trajectory in DATA (chignolin CLN025 + 14 tetrapeptides; the last 10% of each trajectory is held out for the
# validation loss), 4000 optimiser steps of 4 windows, one torch thread, on the 2-core CPU development machine.
#
# Exact history of the shipped weights: the shared 2-core CPU ran slower than first measured, so the run was
# re-targeted three times, each time by stopping right after a checkpoint and continuing with `--resume`:
#   steps     0-750   `--steps 10000` (this command with STEPS=10000)
#   steps   750-2500  `--steps 6000 --resume`
#   steps  2500-3000  `--steps 5000 --resume`
#   steps  3000-4000  `--steps 4000 --resume`   (final; the shipped model.safetensors is the EMA at step 4000)
# Only the cosine learning-rate schedule differs from a single `--steps 4000` run (the same peak, warm-up, data,
# seed and optimiser state carried over), so this command with the default STEPS=4000 reproduces the model up
# to that schedule difference.
#
# Usage: benchmarks/train_default.sh [DATA] [OUTPUT]; then copy OUTPUT/model.{json,safetensors} to
# openmm_starmd/weights/.
set -euo pipefail
DATA=${1:-/work/shared/data/md}
OUTPUT=${2:-/tmp/models/default_small}
STEPS=${STEPS:-4000}
nice -n 5 starmd train "$DATA" -o "$OUTPUT" --preset small --steps "$STEPS" --batch-size 4 --lr 1e-3 \
    --warmup 100 --val-fraction 0.1 --val-every 250 --checkpoint-every 250 --threads 1 --seed 0 --overwrite
