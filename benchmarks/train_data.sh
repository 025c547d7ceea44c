# Sourced by the train_*.sh scripts: the CPU fine-tunes of the default model, each from a shipped parent.
#   fine_tune REV OUT [OPTION...]  links the training data into a fresh folder (every system of ../shared/data/md
#                                  in $SHARED, a third chignolin replica as CLN025s101 and EHEE_rd3_0053 from the
#                                  corpus MD under $MD, and every folder in $EXTRA_SYSTEMS), writes the shipped
#                                  model of commit REV as the parent, and runs `starmd train` with the options
#                                  these runs share plus OPTION...
SHARED=${SHARED:-../shared/data/md}
MD=${MD:-/work/md}

fine_tune() {
    local rev=$1 out=$2 data init system part f
    shift 2
    data=$(mktemp -d)
    init=$(mktemp -d)
    for f in model.json model.safetensors; do git show "$rev:openmm_starmd/weights/$f" > "$init/$f"; done
    for system in "$SHARED"/*/ ${EXTRA_SYSTEMS:-}; do ln -s "$(realpath "$system")" "$data/$(basename "$system")"; done
    mkdir "$data/CLN025s101"
    for part in .pdb _R1.xtc _R1.json; do
        ln -s "$MD/cln/s101/CLN025/CLN025$part" "$data/CLN025s101/CLN025s101$part"
    done
    ln -s "$(realpath "$MD/ehee/EHEE_rd3_0053")" "$data/EHEE_rd3_0053"
    OMP_NUM_THREADS=1 starmd train "$data" -o "$out" --init "$init" --batch-size 16 --lr 3e-4 --warmup 100 \
        --val-every 250 --checkpoint-every 250 --val-systems FIFI,HGDD,KPRY,NVRA,WWET --seed 0 --device cpu \
        --threads 1 "$@"
}
