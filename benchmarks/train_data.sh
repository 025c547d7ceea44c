# Sourced by the train_*.sh scripts: the training folder of the default model's CPU fine-tunes, and its parent.
#   train_data DATA      links ../shared/data/md ($SHARED) and the corpus MD under $MD into DATA (ATLAS layout):
#                        every system of $SHARED, a third chignolin replica as CLN025s101 and EHEE_rd3_0053
#   parent_model DIR REV writes the shipped model of commit REV into DIR
train_data() {
    local data=$1 system
    for system in "$SHARED"/*/; do ln -s "$(realpath "$system")" "$data/$(basename "$system")"; done
    mkdir "$data/CLN025s101"
    for part in .pdb _R1.xtc _R1.json; do
        ln -s "$MD/cln/s101/CLN025/CLN025$part" "$data/CLN025s101/CLN025s101$part"
    done
    ln -s "$(realpath "$MD/ehee/EHEE_rd3_0053")" "$data/EHEE_rd3_0053"
}

parent_model() {
    local f
    for f in model.json model.safetensors; do git show "$2:openmm_starmd/weights/$f" > "$1/$f"; done
}
