#!/usr/bin/env bash
# Experiment (not shipped; results/frontier_window4.md): fine-tunes the χ-head default (sha256 12eb2f0b…,
# commit 0931205) with 4-frame windows on the 2-core CPU.
# Why 4 frames: a tetrapeptide reference of ../shared/data/md is 5 ns (500 frames of 10 ps), so 8-frame windows
# reach at most 71 frames (0.71 ns) between frames and the model never saw a tetrapeptide 1 ns on; 4-frame
# windows reach 1.5 ns in the 4.5 ns training part. The fine-tuned model attends to 4 frames of history.
# Trajectories stay outside git; the training folder is assembled as in train_default_chi.sh.
#
#   SHARED=../shared/data/md MD=/work/md bash benchmarks/train_window4.sh OUT
#
# Inputs as train_default_chi.sh ($SHARED/*, $MD/cln/s101/CLN025, $MD/ehee/EHEE_rd3_0053); the five
# tetrapeptides FIFI, HGDD, KPRY, NVRA, WWET stay held out as whole systems (never trained on).
set -euo pipefail
OUT=${1:?usage: train_window4.sh OUT}
source "$(dirname "$0")/train_data.sh"
fine_tune 0931205 "$OUT" --window 4 --steps 3000
