"""Collect the transfer runs of 2026-12-02 (``results/transfer_1202.{json,md}``) with descriptive model labels.

Those runs were made with ``bench_transfer.py --label L`` into four part folders under ROOT (``transfer_parts``:
L = _shipped1202, ``transfer_parts_diag``: _whole and _prev, ``transfer_parts_retry``: _retry, ``transfer_parts_new``:
_new) and run folders under WORK. Their parts name the model as given on the command line; this copies them into
ROOT/transfer_collect with ``model`` set to what each setting was, fills ``model_max_step_ps`` from the run's own
run.json where a part predates that field, and writes the results with ``bench_transfer.py --collect``.

    python benchmarks/collect_transfer_1202.py ROOT WORK
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

LABELS = {
    "_shipped1202": "shipped weights 0380c176 with the model.json before max_step_residues (250 ps steps for every "
                    "chain), no retry",
    "_prev": "previous default 12eb2f0b (commit e7a5136), 250 ps steps, no retry",
    "_retry": "0380c176, 250 ps steps, with the relaxation retry",
    "_whole": "0380c176 with model.json max_step_ps 0 (one step a jump), no retry",
    "_new": "**shipped now**: 0380c176, max_step_residues 10 (one step a jump here), relaxation retry",
}
ORDER = ["_shipped1202", "_prev", "_retry", "_whole", "_new"]
FOLDERS = ["transfer_parts", "transfer_parts_diag", "transfer_parts_retry", "transfer_parts_new"]


def main() -> None:
    root, work = Path(sys.argv[1]), Path(sys.argv[2])
    out = root / "transfer_collect"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for folder in FOLDERS:
        for part in sorted((root / folder).glob("*.json")):
            entry = json.loads(part.read_text())
            label = "_" + part.stem.split("_")[-1]
            entry["model"] = LABELS[label]
            if entry.get("model_max_step_ps") is None:
                run = work / f"{entry['system']}_{entry['protocol']}{label}" / "run.json"
                entry["model_max_step_ps"] = json.loads(run.read_text())["settings"].get("model_max_step_ps")
            (out / f"{entry['system']}_{ORDER.index(label)}{label}.json").write_text(json.dumps(entry))
    subprocess.run([sys.executable, str(Path(__file__).parent / "bench_transfer.py"), "--collect", "--parts",
                    str(out), "--out", str(Path(__file__).parent / "results" / "transfer_1202")], check=True)


if __name__ == "__main__":
    main()
