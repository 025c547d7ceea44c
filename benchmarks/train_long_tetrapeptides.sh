#!/usr/bin/env bash
# Experiment (not shipped; results/frontier_long_tetrapeptides*.md): fine-tunes the χ-head default
# (sha256 12eb2f0b…, commit 0931205) on the same data plus tetrapeptides from sequence simulated for 12 ns each
# (ADLK, GWTE, KMFS; PHQV finished after training started), so that 8-frame windows reach Δt of 1 ns and more on
# tetrapeptides (the 5 ns references of ../shared/data/md reach 0.71 ns). 2-core CPU, one thread, 1,353 s.
# Trajectories stay outside git.
#
#   SHARED=../shared/data/md MD=/work/md CORPUS=/work/md/s3/corpus/out bash benchmarks/train_long_tetrapeptides.sh OUT
#
# The corpus (resumable; 4 x 12 ns, about 12 min each on one core):
#   printf 'ADLK\nGWTE\nKMFS\nPHQV\n' > peptides.txt
#   starmd md peptides.txt -o $CORPUS --time 12ns --replicas 1 --forcefield implicit-fast --equilibration 100ps \
#       --seed 7 --platform CPU
# Other inputs as train_default_chi.sh; FIFI, HGDD, KPRY, NVRA, WWET stay held out as whole systems.
set -euo pipefail
OUT=${1:?usage: train_long_tetrapeptides.sh OUT}
CORPUS=${CORPUS:?set CORPUS to the starmd md output of the four peptides}
STEPS=${STEPS:-2500}
source "$(dirname "$0")/train_data.sh"
EXTRA_SYSTEMS="$CORPUS/ADLK $CORPUS/GWTE $CORPUS/KMFS" fine_tune 0931205 "$OUT" --steps "$STEPS"
