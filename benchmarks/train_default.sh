#!/usr/bin/env bash
# CPU recipe for a default-style model (`small` preset) on every reference trajectory in DATA (chignolin CLN025 +
# 14 tetrapeptides; the last 10% of each trajectory is held out for the validation loss): 10000 optimiser steps
# of 4 windows, two torch threads, 27 min on the 2-core CPU development machine. The previous default model
# (until 2026-11-26, held-out loss 0.622) was this command as written.
#
# The shipped weights now come from the GPU recipe, benchmarks/train_default_gpu.py (same data, split, preset
# and learning rate; 4070 steps of 64 windows on one H200 in 7.5 min; held-out loss 0.576). Use this script
# where no GPU is available. Models trained with this config see history frames superposed on each other
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
