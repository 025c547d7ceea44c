"""Raw validity and rejection rate from a hybrid run's record (``run.json`` of ``starmd simulate``).

The guards reject proposals with the same thresholds that validation reports, so relaxed frames are
valid by construction; a run record says how many proposals were rejected and, when the simulator
records it, how many raw model proposals (mapped to atoms, before guards and relaxation) were valid.
Fields a record lacks are left out of the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from openmm_starmd.errors import StarMDError

RECORD_NAMES = ("run.json", "rollout.json")


def find_run_record(trajectory: str | os.PathLike) -> Path | None:
    """The run record beside a generated trajectory (its folder's run.json or rollout.json), if any."""
    folder = Path(trajectory).parent
    for name in RECORD_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def load_run_record(path: str | os.PathLike) -> dict:
    """Read a run record (a run.json file, or a run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in RECORD_NAMES if (path / name).is_file()]
        if not found:
            raise StarMDError(f"{path} holds no run.json: give a `starmd simulate` run folder or its run.json")
        path = found[0]
    if not path.is_file():
        raise StarMDError(f"run record {path} not found: give a `starmd simulate` run folder or its run.json")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StarMDError(f"cannot read run record {path} ({type(exc).__name__}): give the run.json that "
                          "`starmd simulate` wrote") from None
    if not isinstance(record, dict):
        raise StarMDError(f"run record {path} is not a JSON object: give the run.json that `starmd simulate` wrote")
    return record


def _raw_fields(record: dict) -> dict[str, object]:
    """Every number whose key starts with ``raw_`` (at any depth: the simulator keeps them under
    ``validity``), by its own key, and ``raw_failures`` (invalid raw proposals by cause) as a dict."""
    out: dict[str, object] = {}
    for key, value in record.items():
        if key == "raw_failures" and isinstance(value, dict):
            out[key] = {str(k): int(v) for k, v in value.items() if isinstance(v, (int, float))}
        elif isinstance(value, dict):
            out.update(_raw_fields(value))
        elif str(key).startswith("raw_") and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = float(value)
    return out


def run_summary(record: dict) -> dict[str, object]:
    """Rejections, proposals, rejection rate, and raw-validity fields of a run record.

    Returns
    -------
    dict
        ``jumps_done``, ``rejected_proposals`` (all reasons), ``rejections`` (by reason),
        ``proposals`` (accepted jumps + rejected proposals), ``rejection_rate`` (rejected / proposals),
        ``halvings``, ``status``, and every raw-validity number the record holds (``raw_valid_fraction``,
        ``raw_proposals``, ... as the simulator names them; ``raw_failures`` by cause). A record's own
        ``validity.rejection_rate`` (rejected / raw proposals) replaces the estimate from the counts.
    """
    out: dict[str, object] = {}
    jumps = record.get("jumps_done")
    rejections = record.get("rejections")
    if isinstance(jumps, int):
        out["jumps_done"] = jumps
    if isinstance(rejections, dict):
        total = int(sum(v for v in rejections.values() if isinstance(v, (int, float))))
        out["rejections"] = rejections
        out["rejected_proposals"] = total
        if isinstance(jumps, int):
            out["proposals"] = jumps + total
            out["rejection_rate"] = total / (jumps + total) if jumps + total else float("nan")
    for key in ("halvings", "status"):
        if key in record:
            out[key] = record[key]
    out.update(_raw_fields(record))
    validity = record.get("validity")
    if isinstance(validity, dict) and isinstance(validity.get("rejection_rate"), (int, float)):
        out["rejection_rate"] = float(validity["rejection_rate"])
    return out
