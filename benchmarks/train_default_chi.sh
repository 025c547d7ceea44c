#!/usr/bin/env bash
# Reproduces the shipped default model (χ head, 2026-12-01): fine-tuned from the previous default on the
# 2-core CPU. Trajectories stay outside git; this script assembles the training folder from them.
#
#   SHARED=../shared/data/md MD=/work/md bash benchmarks/train_default_chi.sh OUT
#
# It starts from the previous default (sha256 bd888ded…, commit 9b9f5d5), extracted into a folder first.
# Inputs (ATLAS layout, implicit-fast, 300 K, 10 ps frames):
#   $SHARED/*            chignolin CLN025 (R1 18 ns, R2 5.4 ns) and 23 tetrapeptides
#   $MD/cln/s101/CLN025  a third chignolin replica, 10 ns:
#                        starmd md $SHARED/CLN025/CLN025.pdb -o $MD/cln/s101 --name CLN025 --time 10ns \
#                            --replicas 1 --forcefield implicit-fast --seed 101
#   $MD/ehee/EHEE_rd3_0053  a designed mini-protein of bioemu-benchmarks, 1.5 ns (prepared from its bioemu
#                        structure, 100 ps equilibration, seed 12, 40.5 ns/day on the loaded 2-core CPU):
#                        starmd md EHEE_rd3_0053.pdb -o $MD/ehee --time 1.5ns --replicas 1 --equilibration 100ps \
#                            --forcefield implicit-fast --seed 12
# The five tetrapeptides FIFI, HGDD, KPRY, NVRA, WWET are held out as whole systems (never trained on).
set -euo pipefail
OUT=${1:?usage: train_default_chi.sh OUT}
source "$(dirname "$0")/train_data.sh"
fine_tune 9b9f5d5 "$OUT" --chi-head --steps 3000
