"""The checkpoint side of a frontier setting: inference-only variants of a model's config (``bench_frontier.py``).

A variant is a folder with the checkpoint's weights and an edited ``model.json`` (history noise, model step,
sampler): a setting of the benchmark, not a new model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from openmm_starmd.atomic import atomic_write_json
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import default_model_path
from openmm_starmd.model.config import ModelConfig


def _checkpoint(model: str) -> tuple[Path, dict]:
    """The checkpoint folder of ``model`` (``default`` or a folder) and its ``model.json``."""
    source = default_model_path() if model == "default" else Path(model)
    return source, json.loads((source / "model.json").read_text())


def _config_value(info: dict, name: str) -> float:
    """A config field of a ``model.json``, or its default where the checkpoint predates the field."""
    return info["config"].get(name, getattr(ModelConfig(), name))


# --model-config: config fields that only change how a checkpoint samples (its weights stay as trained)
INFERENCE_FIELDS = ("deterministic_sampler", "deterministic_steps", "num_sampler_steps", "intermediate_sampler_steps",
                    "sampler_time_power", "sampler_method", "chi_draws")


def parse_model_config(text: str | None) -> dict[str, float | int | str | bool]:
    """``KEY=VALUE,...`` of :data:`INFERENCE_FIELDS`, each value parsed as its field's type."""
    if not text:
        return {}
    defaults, changes = ModelConfig(), {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in INFERENCE_FIELDS or not value:
            raise SystemExit(f"--model-config takes KEY=VALUE of {', '.join(INFERENCE_FIELDS)}; got {item!r}")
        kind = type(getattr(defaults, name))
        if kind is bool:
            if value not in ("true", "false"):
                raise SystemExit(f"--model-config {name} takes true or false, got {value!r}")
            changes[name] = value == "true"
        else:
            try:
                changes[name] = kind(value)
            except ValueError:
                words = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
                raise SystemExit(f"--model-config {name} takes {words}, got {value!r}") from None
    try:
        defaults.replace(**changes)
    except StarMDError as exc:
        raise SystemExit(f"--model-config: {exc}") from None
    return changes


def config_slug(changes: dict) -> str:
    return "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}-{v}" for k, v in sorted(changes.items()))


def sampler_label(model: str) -> str:
    """The sampler of a checkpoint's config in words, e.g. ``ODE on the last model step, SDE before; 20 steps``."""
    info = _checkpoint(model)[1]
    ode, which = _config_value(info, "deterministic_sampler"), _config_value(info, "deterministic_steps")
    steps, inter = _config_value(info, "num_sampler_steps"), _config_value(info, "intermediate_sampler_steps")
    text = {"all": "ODE", "last": "ODE on the last model step, SDE before",
            "intermediate": "ODE on the intermediate model steps, SDE on the last"}[which] if ode else "SDE"
    return f"{text}; {steps:g} sampler steps" + (f" ({inter:g} on intermediate model steps)" if inter else "")


def model_variant(model: str, work: Path, **changes: float | str | bool | None) -> str:
    """A checkpoint folder that is ``model`` with some inference fields of its config changed (None: keep; the model
    itself when nothing changes). The weights are copied, the config edited: a setting of the benchmark, not a new
    model."""
    source, info = _checkpoint(model)
    def same(name: str, value: float | str | bool) -> bool:
        old = _config_value(info, name)
        numeric = isinstance(value, float) and not isinstance(old, (str, bool))
        return math.isclose(old, value) if numeric else old == value

    changes = {k: v for k, v in changes.items() if v is not None and not same(k, v)}
    if not changes:
        return model
    folder = work / "models" / f"{source.name}_{config_slug(changes)}"
    if not (folder / "model.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and item.name != "model.json":
                shutil.copy2(item, folder / item.name)
        info["config"].update(changes)
        atomic_write_json(folder / "model.json", info)
    return str(folder)


def model_max_step_ps(model: str) -> float:
    """The checkpoint's ``max_step_ps`` (0: a jump is one model step): part of the setting, not of the weights."""
    return float(_config_value(_checkpoint(model)[1], "max_step_ps"))
