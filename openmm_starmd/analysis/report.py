"""``starmd validate``: load, match, compare, and write metrics.json, report.md and PNG plots atomically.

The entry point is :func:`validate`. The tables are built from :data:`METRICS`, which names every
metric with its unit and whether lower or higher is better, so the JSON and the Markdown agree.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import mdtraj as md
import numpy as np

from openmm_starmd.analysis.compare import Comparison, compare_ensembles
from openmm_starmd.analysis.matching import load_trajectory, match_atoms, matched_pair
from openmm_starmd.analysis.run_record import find_run_record, load_run_record, run_summary
from openmm_starmd.analysis.size_matched import SizeMatched, size_matched, size_matched_markdown
from openmm_starmd.analysis.validity import CA_BOND_BREAK_NM, CA_CLASH_NM, HEAVY_CLASH_NM
from openmm_starmd.atomic import atomic_dir, atomic_write, atomic_write_json, check_output_dir
from openmm_starmd.errors import StarMDError
from openmm_starmd.units import parse_time

# name -> (section, label, unit, better)
METRICS: dict[str, tuple[str, str, str, str]] = {
    "rmsf_pearson_r": ("Ensemble", "CA RMSF Pearson r", "", "higher"),
    "rmsf_mae_nm": ("Ensemble", "CA RMSF mean abs. error", "nm", "lower"),
    "pairwise_rmsd_nm": ("Ensemble", "Mean pairwise CA RMSD (sample)", "nm", "close to ref"),
    "pairwise_rmsd_ref_nm": ("Ensemble", "Mean pairwise CA RMSD (reference)", "nm", "-"),
    "pairwise_rmsd_diff_nm": ("Ensemble", "Mean pairwise RMSD abs. difference", "nm", "lower"),
    "pairwise_rmsd_jsd": ("Ensemble", "Pairwise RMSD histogram JSD", "bits", "lower"),
    "pc_jsd": ("Ensemble", "PC1/PC2 JSD", "bits", "lower"),
    "pc_recall": ("Ensemble", "PC1/PC2 recall", "", "higher"),
    "pc_w2_nm": ("Ensemble", "PC1/PC2 Wasserstein-2", "nm", "lower"),
    "torsion_jsd": ("Ensemble", "Backbone φ/ψ JSD (mean)", "bits", "lower"),
    "chi1_jsd": ("Side chains", "χ1 JSD (mean over residues)", "bits", "lower"),
    "chi2_jsd": ("Side chains", "χ2 JSD (mean over residues)", "bits", "lower"),
    "rotamer_rate_per_ns": ("Side chains", "χ1 rotamer transitions per residue per ns (sample)", "1/ns",
                            "close to ref"),
    "rotamer_rate_ref_per_ns": ("Side chains", "χ1 rotamer transitions per residue per ns (reference)", "1/ns",
                                "-"),
    "rotamer_rate_ratio": ("Side chains", "χ1 rotamer transition rate ratio", "", "close to 1"),
    "tic_jsd": ("Dynamics", "TIC1/TIC2 JSD", "bits", "lower"),
    "tic1_jsd": ("Dynamics", "TIC1 JSD", "bits", "lower"),
    "acf_area_ps": ("Dynamics", "TIC1 autocorrelation difference area", "ps", "lower"),
    "vamp2_diff": ("Dynamics", "VAMP-2 score abs. deviation", "", "lower"),
    "rmsd_lag_diff_nm": ("Dynamics", "RMSD-vs-lag curve mean abs. difference", "nm", "lower"),
    "decorrelation_ps": ("Dynamics", "TIC1 decorrelation time (sample)", "ps", "close to ref"),
    "decorrelation_ref_ps": ("Dynamics", "TIC1 decorrelation time (reference)", "ps", "-"),
    "decorrelation_ratio": ("Dynamics", "TIC1 decorrelation time ratio", "", "close to 1"),
    "break_rate": ("Validity", f"Frames with a CA–CA break (> {CA_BOND_BREAK_NM} nm)", "", "lower"),
    "ca_clash_rate": ("Validity", f"Frames with a CA clash (< {CA_CLASH_NM} nm)", "", "lower"),
    "heavy_clash_rate": ("Validity", f"Frames with a heavy-atom clash (< {HEAVY_CLASH_NM} nm)", "", "lower"),
    "invalid_rate": ("Validity", "Frames with any break or clash", "", "lower"),
    "break_rate_rel": ("Validity", "Break rate vs reference 99th percentile", "", "≈ 0.01"),
    "ca_clash_rate_rel": ("Validity", "CA clash rate vs reference 99th percentile", "", "≈ 0.01"),
    "heavy_clash_rate_rel": ("Validity", "Heavy clash rate vs reference 99th percentile", "", "≈ 0.01"),
}
WINDOW_COLUMNS = ("pc_jsd", "pc_recall", "torsion_jsd", "rmsf_pearson_r", "tic_jsd", "invalid_rate")


def frame_interval_ps(traj: md.Trajectory) -> float | None:
    """Time between frames in ps from the file's time stamps, or None if they are missing or uneven."""
    if traj.n_frames < 2:
        return None
    steps = np.diff(traj.time)
    if steps[0] <= 0 or not np.allclose(steps, steps[0], rtol=1e-3):
        return None
    return float(steps[0])


def common_interval(gen_dt: float | None, ref_dt: float | None) -> tuple[float | None, int, int, str]:
    """Common frame interval for the dynamics metrics and the strides that reach it.

    Parameters
    ----------
    gen_dt, ref_dt
        Frame intervals (ps) of the generated and reference trajectories, None if unknown.

    Returns
    -------
    (dt_ps, sample_stride, reference_stride, note)
        The coarser interval, the whole-number strides for each side, and a sentence for the report.

    Raises
    ------
    StarMDError
        If neither interval is a whole multiple of the other.
    """
    if gen_dt is None or ref_dt is None:
        return ((gen_dt or ref_dt), 1, 1,
                "frame times missing: generated and reference frames taken as equally spaced")
    ratio = max(gen_dt, ref_dt) / min(gen_dt, ref_dt)
    k = round(ratio)
    if abs(ratio - k) > 1e-3 * ratio:
        raise StarMDError(f"generated frames are {gen_dt:g} ps apart and reference frames {ref_dt:g} ps: "
                          "one must be a whole multiple of the other; resample a trajectory")
    if k == 1:
        return ref_dt, 1, 1, f"generated and reference frames both {ref_dt:g} ps apart"
    if gen_dt >= ref_dt:
        return gen_dt, 1, k, f"reference strided by {k} to the generated interval of {gen_dt:g} ps"
    return ref_dt, k, 1, f"generated trajectory strided by {k} to the reference interval of {ref_dt:g} ps"


def parse_lag(text: str | int, dt_ps: float | None) -> int:
    """A lag given as frames (``"10"``) or time (``"100ps"``), in frames of the interval ``dt_ps``."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    lag_ps = parse_time(text, "--lag")
    if dt_ps is None:
        raise StarMDError("--lag given as a time but the trajectories carry no frame times: "
                          "give it in frames")
    frames = round(lag_ps / dt_ps)
    if frames < 1:
        raise StarMDError(f"--lag {text} is shorter than one frame ({dt_ps:g} ps): give a longer lag")
    return frames


def _clean(value: object) -> object:
    """JSON-safe copy: NaN/inf become None, numpy scalars and arrays become Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def comparison_to_json(cmp: Comparison, inputs: dict[str, object], extra: dict[str, object] | None = None
                       ) -> dict[str, object]:
    """Everything measured, as a JSON-ready dict (metric values with their floor, unit and direction).

    ``extra`` adds top-level sections (``size_matched``, ``energy``, ``run``)."""
    metrics = {
        name: {"value": cmp.metrics.get(name), "md_vs_md_floor": cmp.floor.get(name), "unit": unit,
               "better": better, "section": section, "label": label}
        for name, (section, label, unit, better) in METRICS.items() if name in cmp.metrics
    }
    d = cmp.data
    return _clean({
        "inputs": inputs, "info": cmp.info, "floor_method": cmp.floor_method, "metrics": metrics,
        "per_residue": {"residues": d["residues"], "rmsf_sample_nm": d["rmsf_sample"],
                        "rmsf_reference_nm": d["rmsf_reference"]},
        "per_residue_sidechains": _sidechain_table(d),
        "curves": {"acf_lags_ps": d["acf_lags_ps"], "acf_tic1_sample": d["acf_sample"],
                   "acf_tic1_reference": d["acf_reference"], "rmsd_lags_ps": d["rmsd_lags_ps"],
                   "rmsd_lag_sample_nm": d["rmsd_lag_sample"],
                   "rmsd_lag_reference_nm": d["rmsd_lag_reference"]},
        "windows": cmp.windows, "windows_md_vs_md_floor": cmp.window_floor, **(extra or {}),
    })


def _sidechain_table(d: dict) -> dict[str, object]:
    """Per-residue χ1/χ2 JSD and χ1 rotamer rates (sample, MD-vs-MD floor, reference)."""
    return {"chi1_residues": d["chi1_residues"], "chi1_jsd": d["side_chi1_jsd"],
            "chi1_jsd_md_vs_md_floor": d["floor_side_chi1_jsd"],
            "rotamer_rate_per_ns": d["side_rotamer_rate_per_ns"],
            "rotamer_rate_md_vs_md_floor_per_ns": d["floor_side_rotamer_rate_per_ns"],
            "rotamer_rate_reference_per_ns": d["rotamer_rate_reference"],
            "chi2_residues": d["chi2_residues"], "chi2_jsd": d["side_chi2_jsd"],
            "chi2_jsd_md_vs_md_floor": d["floor_side_chi2_jsd"]}


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3f}"
    return f"{value:.2e}"


def comparison_to_markdown(cmp: Comparison, inputs: dict[str, object], sized: SizeMatched | None = None,
                           energy: dict | None = None, run: dict | None = None) -> str:
    """A Markdown report: the metrics table (sample and MD-vs-MD floor), the drift table, per-residue side
    chains, and the size-matched, energy and run-record sections when given."""
    info = cmp.info
    lines = [
        "# STAR-MD validation report", "",
        f"Generated: {', '.join(map(str, inputs['generated']))}  ",
        f"Reference: {', '.join(map(str, inputs['reference']))}  ",
        f"Frames: generated {sum(info['sample_frames'])}, reference {sum(info['reference_frames'])}; "
        f"{info['residues']} residues, {info['atoms_matched']} matched atoms.  ",
        f"TICA/VAMP: {info['features']} features, lag {info['lag_frames']} frames"
        + (f" ({info['lag_frames'] * info['dynamics_dt_ps']:g} ps)" if info["dynamics_dt_ps"] else "")
        + f"; {inputs['time_note']}.  ",
        f"Floor: {cmp.floor_method}.", "",
        "| Section | Metric | Generated | MD vs MD (floor) | Unit | Better |",
        "|---|---|---|---|---|---|",
    ]
    for name, (section, label, unit, better) in METRICS.items():
        if name in cmp.metrics:
            lines.append(f"| {section} | {label} | {_fmt(cmp.metrics[name])} | {_fmt(cmp.floor.get(name))} "
                         f"| {unit} | {better} |")
    lines += [
        "", "JSD: Jensen–Shannon divergence in bits (0 identical, 1 disjoint) on fixed reference bins. "
        "Recall: share of reference-occupied bins visited. Relative validity rates: share of frames whose "
        "worst CA–CA bond / closest contact is beyond the reference's own 99th percentile "
        "(the reference scores 0.01 by construction). n/a: not defined, e.g. a TIC1 autocorrelation that "
        "never falls below 1/e within the longest lag.", "",
        "## Drift over successive windows of the generated trajectory", "",
        f"| Window ({'ps' if info['dynamics_dt_ps'] else 'frames'}) | "
        + " | ".join(METRICS[c][1] for c in WINDOW_COLUMNS) + " |",
        "|---|" + "---|" * len(WINDOW_COLUMNS),
    ]
    for row in cmp.windows:
        lines.append(f"| {row['start_ps']:g}–{row['end_ps']:g} | "
                     + " | ".join(_fmt(row.get(c)) for c in WINDOW_COLUMNS) + " |")
    lines.append("| MD vs MD, same window length | "
                 + " | ".join(_fmt(cmp.window_floor.get(c)) for c in WINDOW_COLUMNS) + " |")
    lines += _sidechain_markdown(cmp.data)
    if sized is not None:
        lines += ["", "## Size-matched comparison", "", *size_matched_markdown(sized)]
    if energy is not None:
        lines += _energy_markdown(energy)
    if run is not None:
        lines += _run_markdown(run)
    lines += ["", "## Plots", ""] + [f"![{name}]({name}.png)" for name in PLOT_NAMES] + [""]
    return "\n".join(lines)


def _sidechain_markdown(d: dict) -> list[str]:
    if not d["chi1_residues"]:
        return []
    chi2 = dict(zip(d["chi2_residues"], zip(d["side_chi2_jsd"], d["floor_side_chi2_jsd"], strict=True), strict=True))
    lines = ["", "## Side chains per residue", "",
             "| Residue | χ1 JSD (floor) | χ2 JSD (floor) | χ1 rotamer transitions / ns: generated, MD-vs-MD floor, "
             "reference |", "|---|---|---|---|"]
    for k, res in enumerate(d["chi1_residues"]):
        c2 = chi2.get(res)
        lines.append(f"| {res} | {_fmt(d['side_chi1_jsd'][k])} ({_fmt(d['floor_side_chi1_jsd'][k])}) | "
                     + (f"{_fmt(c2[0])} ({_fmt(c2[1])})" if c2 else "–") + " | "
                     f"{_fmt(d['side_rotamer_rate_per_ns'][k])}, {_fmt(d['floor_side_rotamer_rate_per_ns'][k])}, "
                     f"{_fmt(d['rotamer_rate_reference'][k])} |")
    lines += ["", "Rotamer wells of χ1: g+ [0°, 120°), g− [−120°, 0°), t otherwise; a transition is a change of "
              "well between consecutive frames at the dynamics interval (proline: n/a, its χ1 is a ring pucker)."]
    return lines


def _energy_markdown(energy: dict) -> list[str]:
    rows = (("Mean", "mean_sample", "mean_reference", "kJ/mol"), ("Standard deviation", "sd_sample", "sd_reference",
            "kJ/mol"), ("sd ratio (sample / reference)", "sd_ratio", None, ""),
            ("Mean shift (reference sd)", "mean_diff_in_ref_sd", None, ""), ("KS statistic", "ks_statistic", None, ""),
            ("KS p-value", "ks_pvalue", None, ""))
    g, f = energy["generated_vs_reference"], energy["md_vs_md_floor"]
    lines = ["", f"## Potential energy ({energy['forcefield']}, recomputed from the saved frames)", "",
             f"{g['n_sample']} generated frames vs {g['n_reference']} reference frames; floor: the reference's "
             "second halves against its first halves.", "",
             "| Quantity | Generated | Reference | MD vs MD (floor) | Unit |", "|---|---|---|---|---|"]
    for label, key, ref_key, unit in rows:
        lines.append(f"| {label} | {_fmt(g[key])} | {_fmt(g[ref_key]) if ref_key else ''} | {_fmt(f[key])} | {unit} |")
    return lines


def _run_markdown(run: dict) -> list[str]:
    lines = ["", "## Hybrid run record", "", f"Record: {run['record']}.", "", "| Quantity | Value |", "|---|---|"]
    for key, value in run.items():
        if key not in ("record", "rejections", "raw_failures"):
            lines.append(f"| {key} | {_fmt(value) if isinstance(value, float) else value} |")
    if "rejections" in run:
        lines.append(f"| rejections by reason | {', '.join(f'{k} {v}' for k, v in run['rejections'].items())} |")
    if "raw_failures" in run:
        lines.append(f"| invalid raw proposals by cause | "
                     f"{', '.join(f'{k} {v}' for k, v in run['raw_failures'].items())} |")
    if not any("raw" in key for key in run):
        lines += ["", "This record holds no raw (pre-guard) validity: only the relaxed frames' validity is known."]
    return lines


PLOT_NAMES = ("rmsf", "pca_density", "tica_fes", "ramachandran", "autocorrelation", "validity", "drift", "sidechains")


def _energies(trajs: list[md.Trajectory], top: str | os.PathLike, preset: str, what: str) -> list[np.ndarray]:
    """Potential energies (kJ/mol) of every frame of full-atom trajectories loaded with topology ``top``."""
    import openmm.app as app

    from openmm_starmd.analysis.energy import potential_energies

    try:
        topology = app.PDBFile(str(top)).topology
        return [potential_energies(t.xyz, topology, preset) for t in trajs]
    except StarMDError:
        raise
    except Exception as exc:  # OpenMM raises ValueError/OpenMMException for missing templates or atoms
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StarMDError(f"cannot compute energies of the {what} frames with --forcefield {preset} ({first}): "
                          "--forcefield needs all-atom trajectories with the topology they were written with") from None


def energy_section(gen_energies: list[np.ndarray], ref_energies: list[np.ndarray], preset: str) -> dict:
    """Energy distributions of generated vs reference frames, and the reference's second halves vs its first
    halves (the MD-vs-MD floor); see :func:`openmm_starmd.analysis.energy.compare_energies`."""
    from openmm_starmd.analysis.energy import compare_energies

    first = np.concatenate([e[: len(e) // 2] for e in ref_energies])
    second = np.concatenate([e[len(e) // 2:] for e in ref_energies])
    return {"forcefield": preset, "unit": "kJ/mol",
            "generated_vs_reference": compare_energies(np.concatenate(gen_energies), np.concatenate(ref_energies)),
            "md_vs_md_floor": compare_energies(second, first)}


def _check_forcefield(preset: str | None) -> None:
    if preset is None:
        return
    from openmm_starmd.forcefields import get_preset

    if get_preset(preset).solvent != "implicit":
        raise StarMDError(f"--forcefield {preset} is not an implicit-solvent preset: energies of saved frames need "
                          "one (implicit or implicit-fast)")


def validate(generated: list[str | os.PathLike], reference: list[str | os.PathLike], top: str | os.PathLike,
             out: str | os.PathLike, gen_top: str | os.PathLike | None = None, lag: str | int = "100ps",
             features: str = "torsions", windows: int = 5, overwrite: bool = False,
             progress: bool = True, forcefield: str | None = None,
             run: str | os.PathLike | None = None) -> Path:
    """Compare generated trajectories with reference MD and write the report folder ``out``.

    Parameters
    ----------
    generated, reference
        Trajectory files; reference replicas share ``top``; generated ones use ``gen_top`` if given.
    top, gen_top
        Topology files (PDB).
    out
        Output folder (written atomically: metrics.json, report.md, PNG plots).
    lag
        TICA/VAMP lag, frames (``"10"``) or time (``"100ps"``).
    features
        ``"torsions"`` or ``"distances"`` for TICA/VAMP.
    windows
        Number of successive windows for the drift table.
    overwrite
        Replace an existing ``out``.
    forcefield
        Implicit-solvent preset: also compare potential energies (kJ/mol) recomputed from the saved frames
        of both sides (needs all-atom trajectories).
    run
        Run record (run.json or its folder) of the hybrid run that wrote the generated trajectory; by
        default the run.json beside a single generated trajectory, if there is one.

    Returns
    -------
    Path
        The written folder.
    """
    from openmm_starmd.analysis.plots import write_plots

    check_output_dir(out, overwrite)
    _check_forcefield(forcefield)
    record_path = run if run is not None else (find_run_record(generated[0]) if len(generated) == 1 else None)
    record = load_run_record(record_path) if record_path is not None else None
    full_refs = [load_trajectory(p, top) for p in reference]
    full_gens = [load_trajectory(p, gen_top or top) for p in generated]
    if any(r.topology.n_atoms != full_refs[0].topology.n_atoms for r in full_refs):
        raise StarMDError("reference replicas have different atom counts: give replicas of one system")
    if any(g.topology.n_atoms != full_gens[0].topology.n_atoms for g in full_gens):
        raise StarMDError("generated trajectories have different atom counts: give runs of one system")
    gen_idx, ref_idx = match_atoms(full_gens[0].topology, full_refs[0].topology)
    gens = [matched_pair(g, full_refs[0], gen_idx, ref_idx)[0] for g in full_gens]
    refs = [r.atom_slice(ref_idx) for r in full_refs]
    dt, s_stride, r_stride, note = common_interval(frame_interval_ps(gens[0]), frame_interval_ps(refs[0]))
    lag_frames = parse_lag(lag, dt)
    gen_e = ref_e = None
    if forcefield is not None:
        gen_e = _energies(full_gens, gen_top or top, forcefield, "generated")
        ref_e = _energies(full_refs, top, forcefield, "reference")
    cmp = compare_ensembles(gens, refs, lag=lag_frames, dt_ps=dt, kind=features, n_windows=windows,
                            sample_stride=s_stride, reference_stride=r_stride, progress=progress)
    extra: dict[str, object] = {}
    try:
        sized = size_matched(gens, refs, dt, s_stride, r_stride, lag_ps=lag_frames * (dt or 1.0), kind=features,
                             sample_energies=gen_e, reference_energies=ref_e)
        extra["size_matched"] = sized.to_dict()
    except StarMDError as exc:
        sized = None
        extra["size_matched"] = {"skipped": str(exc)}
    energy = energy_section(gen_e, ref_e, forcefield) if gen_e is not None else None
    if energy is not None:
        extra["energy"] = energy
    run_info = None
    if record is not None:
        run_info = {"record": str(record_path), **run_summary(record),
                    "relaxed_valid_fraction": 1.0 - cmp.metrics["invalid_rate"]}
        extra["run"] = run_info
    inputs = {"generated": [str(p) for p in generated], "reference": [str(p) for p in reference],
              "topology": str(top), "generated_topology": str(gen_top) if gen_top else None,
              "lag": str(lag), "time_note": note, "forcefield": forcefield}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        atomic_write_json(tmp / "metrics.json", comparison_to_json(cmp, inputs, extra))
        with atomic_write(tmp / "report.md") as handle:
            handle.write(comparison_to_markdown(cmp, inputs, sized, energy, run_info))
        write_plots(cmp, tmp)
    return Path(out)
