"""One full comparison of a generated ensemble with reference MD, with the MD-vs-MD floor and windows.

:func:`compare_ensembles` fits the reference once, measures the sample against it, measures MD
against MD the same way (the floor: no sample can be expected to beat it), and repeats the cheap
metrics over successive windows of the sample to show drift over a long rollout.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import mdtraj as md
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from openmm_starmd.analysis import divergences as dv
from openmm_starmd.analysis.dynamics import (
    MAX_ACF_LAG,
    DynamicsReference,
    autocorrelation,
    compare_dynamics,
    fit_dynamics_reference,
)
from openmm_starmd.analysis.ensemble import (
    EnsembleReference,
    backbone_torsions,
    ca_rmsf,
    compare_ensemble,
    fit_ensemble_reference,
)
from openmm_starmd.analysis.sidechains import SidechainReference, compare_sidechains, fit_sidechain_reference
from openmm_starmd.analysis.validity import (
    FrameValidity,
    ValidityReference,
    fit_validity_reference,
    frame_validity,
    validity_rates,
)
from openmm_starmd.errors import StarMDError

WINDOW_MIN_FRAMES = 20


@dataclass
class Comparison:
    """Everything a report needs.

    Attributes
    ----------
    metrics, floor
        Metric name -> value for sample vs reference and for MD vs MD (floor; averaged over
        leave-one-replica-out, or second half vs first half of a single replica).
    floor_method
        Human-readable description of how the floor was obtained.
    windows
        One dict per window of the sample: ``start_ps``, ``end_ps`` and per-window metrics.
    window_floor
        The same window metrics for MD vs MD at the same window length (averaged), so that drift is
        judged against what MD itself scores on windows that short.
    data
        Arrays for plots: RMSF (N,), PCs (S, 2), TICs (S, 2), φ/ψ (S, K), ACFs, RMSD-vs-lag curves,
        per-frame validity, in the units of the metric modules.
    info
        Sizes, lag, frame intervals.
    """

    metrics: dict[str, float]
    floor: dict[str, float]
    floor_method: str
    windows: list[dict[str, float]] = field(default_factory=list)
    window_floor: dict[str, float] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)


def _all_metrics(ens: EnsembleReference, dyn: DynamicsReference, side: SidechainReference,
                 val_ref: ValidityReference, trajs: list[md.Trajectory], dyn_trajs: list[md.Trajectory],
                 validity: list[FrameValidity]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every scalar metric, and the curves and per-residue side-chain arrays (keys ``side_*``)."""
    metrics = compare_ensemble(ens, trajs)
    dyn_metrics, curves = compare_dynamics(dyn, dyn_trajs)
    metrics.update(dyn_metrics)
    side_metrics, per_residue = compare_sidechains(side, trajs, dyn_trajs)
    metrics.update(side_metrics)
    curves.update({f"side_{k}": v for k, v in per_residue.items()})
    metrics.update(validity_rates(_join_validity(validity), val_ref))
    return metrics, curves


def _mean(values: list[float]) -> float:
    """Mean of the finite values (NaN if there are none, without a warning)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _mean_arrays(arrays: list[np.ndarray]) -> np.ndarray:
    """Element-wise mean of equal-shape arrays over their finite values (NaN where none is finite)."""
    stacked = np.stack(arrays)
    finite = np.isfinite(stacked)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(finite, stacked, 0.0).sum(axis=0) / count, np.nan)


def _join_validity(items: list[FrameValidity]) -> FrameValidity:
    return FrameValidity(**{k: np.concatenate([getattr(v, k) for v in items])
                            for k in FrameValidity.__dataclass_fields__})


def _slice_validity(v: FrameValidity, part: slice) -> FrameValidity:
    return FrameValidity(**{k: getattr(v, k)[part] for k in FrameValidity.__dataclass_fields__})


Parts = list[tuple[int, slice]]  # (replica index, frames) pieces of the reference set


def _floor_splits(references: list[md.Trajectory]) -> tuple[list[tuple[Parts, Parts]], str]:
    """(reference pieces, held-out pieces) for each MD-vs-MD comparison, and how they were chosen."""
    everything = slice(None)
    if len(references) >= 2:
        splits = [([(k, everything) for k in range(len(references)) if k != j], [(j, everything)])
                  for j in range(len(references))]
        return splits, f"MD vs MD: each of {len(references)} reference replicas against the others, averaged"
    half = references[0].n_frames // 2
    return ([([(0, slice(None, half))], [(0, slice(half, None))])],
            "MD vs MD: second half of the single reference replica against its first half (half-length "
            "pieces, so the floor is pessimistic for samples as long as the whole reference)")


def _window_rows(samples: list[md.Trajectory], validity: list[FrameValidity], ens: EnsembleReference,
                 dyn: DynamicsReference, val_ref: ValidityReference, bounds: np.ndarray,
                 dt_ps: float) -> list[dict[str, float]]:
    """Cheap metrics of frames ``bounds[i]:bounds[i+1]`` of every sample trajectory, per window."""
    rows = []
    for a, b in itertools.pairwise(bounds):
        part = [t[a:b] for t in samples]
        row = {"start_ps": float(a * dt_ps), "end_ps": float(b * dt_ps)}
        row.update(compare_ensemble(ens, part, pairwise=False, w2=False))
        row["tic_jsd"] = dv.jensen_shannon(dv.histogram(np.concatenate(dyn.project(part)), dyn.tic_edges),
                                           dyn.tic_hist)
        row.update(validity_rates(_join_validity([_slice_validity(v, slice(a, b)) for v in validity]),
                                  val_ref))
        rows.append(row)
    return rows


def compare_ensembles(samples: list[md.Trajectory], references: list[md.Trajectory], lag: int,
                      dt_ps: float | None, kind: str = "torsions", n_windows: int = 5,
                      sample_stride: int = 1, reference_stride: int = 1,
                      progress: bool = True) -> Comparison:
    """Compare generated trajectories with reference MD, including the MD-vs-MD floor and windows.

    Parameters
    ----------
    samples, references
        Trajectories with one common (matched) topology, nm.
    lag
        TICA/VAMP lag in frames of the dynamics interval.
    dt_ps
        Dynamics frame interval in ps after striding (None if unknown: times are then in frames).
    kind
        TICA feature kind (``"torsions"`` or ``"distances"``).
    n_windows
        Successive windows of the sample for the drift table (reduced so each has ≥ 20 frames).
    sample_stride, reference_stride
        Frame strides that bring both to the common dynamics interval ``dt_ps`` (ensemble metrics
        use every frame).
    progress
        Show a progress bar.
    """
    if not samples or not references:
        raise StarMDError("give at least one generated and one reference trajectory")
    # Spinning BLAS and OpenMP worker threads starve each other (100x slower on 2 cores); every
    # array here is small, so one thread costs little.
    with threadpool_limits(limits=1):
        return _compare(samples, references, lag, dt_ps, kind, n_windows, sample_stride, reference_stride,
                        progress)


def _compare(samples, references, lag, dt_ps, kind, n_windows, sample_stride, reference_stride, progress):
    step = dt_ps if dt_ps else 1.0
    dyn_samples = [t[::sample_stride] for t in samples]
    splits, method = _floor_splits(references)
    dyn_refs = [t[::reference_stride] for t in references]
    dyn_sets = [[references[k][sl][::reference_stride] for k, sl in part] for pair in splits for part in pair]
    shortest = min(len(t) for group in [*dyn_sets, dyn_refs, dyn_samples] for t in group)
    # Beyond a quarter of the shortest trajectory the ACF estimate is mostly noise.
    max_lag = max(2, min(shortest // 4, MAX_ACF_LAG))
    bar = tqdm(total=4 + len(splits), desc="validate", disable=not progress, leave=False)

    bar.set_postfix_str("fit reference")
    ens = fit_ensemble_reference(references)
    dyn = fit_dynamics_reference(dyn_refs, lag, step, kind, max_lag=max_lag)
    side = fit_sidechain_reference(references, dyn_refs, step)
    ref_validity = [frame_validity(t) for t in references]
    val_ref = fit_validity_reference(_join_validity(ref_validity))
    bar.update()

    bar.set_postfix_str("sample vs reference")
    validity = [frame_validity(t) for t in samples]
    metrics, curves = _all_metrics(ens, dyn, side, val_ref, samples, dyn_samples, validity)
    bar.update()

    floors, floor_windows, floor_side = [], [], []
    sample_len = min(t.n_frames for t in samples)
    bounds = np.linspace(0, sample_len, max(1, min(n_windows, sample_len // WINDOW_MIN_FRAMES)) + 1)
    bounds = bounds.round().astype(int)
    for k, (ref_part, sample_part) in enumerate(splits):
        bar.set_postfix_str(f"MD-vs-MD floor {k + 1}/{len(splits)}")
        dyn_ref_part, dyn_sample_part = dyn_sets[2 * k], dyn_sets[2 * k + 1]
        f_ens = fit_ensemble_reference([references[j][sl] for j, sl in ref_part])
        f_dyn = fit_dynamics_reference(dyn_ref_part, lag, step, kind, max_lag=max_lag)
        f_side = fit_sidechain_reference([references[j][sl] for j, sl in ref_part], dyn_ref_part, step)
        f_val = fit_validity_reference(_join_validity([_slice_validity(ref_validity[j], sl)
                                                       for j, sl in ref_part]))
        held_out = [references[j][sl] for j, sl in sample_part]
        held_validity = [_slice_validity(ref_validity[j], sl) for j, sl in sample_part]
        values, floor_curves = _all_metrics(f_ens, f_dyn, f_side, f_val, held_out, dyn_sample_part, held_validity)
        floors.append(values)
        floor_side.append({k: v for k, v in floor_curves.items() if k.startswith("side_")})
        # The same window length as the sample's windows, so the drift plot compares like with like.
        length = min(t.n_frames for t in held_out)
        width = min(int(bounds[1] - bounds[0]), length)
        rows = _window_rows(held_out, held_validity, f_ens, f_dyn, f_val,
                            np.arange(0, (length // width) * width + 1, width), 1.0)
        floor_windows.append({key: _mean([r[key] for r in rows]) for key in rows[0]})
        bar.update()
    floor = {key: _mean([f[key] for f in floors]) for key in floors[0]}

    bar.set_postfix_str("windows")
    frame_ps = dt_ps / sample_stride if dt_ps else 1.0
    windows = _window_rows(samples, validity, ens, dyn, val_ref, bounds, frame_ps)
    window_floor = {key: _mean([f[key] for f in floor_windows]) for key in floor_windows[0]}
    bar.update()

    bar.set_postfix_str("plot data")
    sample_torsions, labels = backbone_torsions(samples)
    data = {
        "rmsf_sample": ca_rmsf(samples), "rmsf_reference": ens.rmsf,
        "residues": [str(atom.residue) for atom in ens.mean.topology.atoms],
        "pcs_sample": ens.project(samples), "pcs_reference": ens.pcs,
        "tics_sample": np.concatenate(dyn.project(dyn_samples)), "tics_reference": np.concatenate(dyn.tics),
        "torsions_sample": sample_torsions, "torsions_reference": ens.torsions, "torsion_labels": labels,
        "acf_lags_ps": np.arange(max_lag + 1) * step, "acf_sample": curves["acf"], "acf_reference": dyn.acf,
        "acf_replicas": [autocorrelation([x[:, 0]], max_lag) for x in dyn.tics],
        "rmsd_lags_ps": dyn.rmsd_lags * step, "rmsd_lag_sample": curves["rmsd_curve"],
        "rmsd_lag_reference": dyn.rmsd_curve,
        "validity_sample": validity, "validity_reference": ref_validity, "validity_limits": val_ref,
        "chi1_residues": side.chi1_residues, "chi2_residues": side.chi2_residues,
        "rotamer_rate_reference": side.rates_per_ns,
        **{k: v for k, v in curves.items() if k.startswith("side_")},
        **{f"floor_{k}": _mean_arrays([f[k] for f in floor_side]) for k in floor_side[0]},
    }
    bar.update()
    bar.close()
    info = {
        "sample_frames": [t.n_frames for t in samples], "reference_frames": [t.n_frames for t in references],
        "atoms_matched": samples[0].n_atoms, "residues": len(ens.ca), "lag_frames": lag,
        "dynamics_dt_ps": dt_ps, "sample_stride": sample_stride, "reference_stride": reference_stride,
        "sample_frame_ps": dt_ps / sample_stride if dt_ps else None,
        "reference_frame_ps": dt_ps / reference_stride if dt_ps else None, "features": kind,
        "acf_max_lag_frames": max_lag, "reference_tau_ps": dyn.tau_ps,
        "reference_vamp2": dyn.vamp2,
    }
    return Comparison(metrics=metrics, floor=floor, floor_method=method, windows=windows,
                      window_floor=window_floor, data=data, info=info)
