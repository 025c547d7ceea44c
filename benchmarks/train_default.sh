#!/usr/bin/env bash
# Reproduces the shipped default model (openmm_starmd/weights/): `small` preset trained on every reference
# trajectory in DATA (chignolin CLN025 + 14 tetrapeptides; the last 10% of each trajectory is held out for the
# validation loss), 10000 optimiser steps of 4 windows, two torch threads, on the 2-core CPU development machine.
#
# The shipped weights are this command as written (one uninterrupted run, 10000 steps, 2 torch threads,
# 2026-11-26). Models trained with this config see history frames superposed on each other
# (ModelConfig.align_history) and displacements in Å units.
#
# Usage: benchmarks/train_default.sh [DATA] [OUTPUT]; then copy OUTPUT/model.{json,safetensors} to
# openmm_starmd/weights/.
set -euo pipefail
DATA=${1:-/work/shared/data/md}
OUTPUT=${2:-/tmp/models/default_small}
STEPS=${STEPS:-10000}
nice -n 5 starmd train "$DATA" -o "$OUTPUT" --preset small --steps "$STEPS" --batch-size 4 --lr 1e-3 \
    --warmup 100 --val-fraction 0.1 --val-every 500 --checkpoint-every 500 --threads 2 --seed 0 --overwrite
