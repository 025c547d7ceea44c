"""Size-matched comparison: generated frames and an equal number of MD frames against the same MD sample.

JSDs and correlations estimated from few frames are biased, so a generated sample is only compared with
MD at equal sample size. The reference replicas are cut in halves: the second halves (pooled) are the
target; N generated frames are scored against them, next to the first halves (pooled) evenly thinned to
the same N frames, scored the same way. N is the generated frame count, or the first halves' count if
that is smaller (the generated frames are then thinned evenly too). The MD row is the floor: what MD
itself scores with N frames.

Dynamics: TICA is fitted on the target at the reference's own frame interval; the TIC1 decorrelation
times of the generated frames, of the first halves (cut to the generated frame count) and of the
target are all measured at the common interval ``dt_ps``, and the first two are divided by the
target's. A decorrelation time shorter than one frame cannot be resolved (it is an interpolation
inside the first lag): ``target["decorrelation_native_ps"]``, measured at the reference's own
interval, tells whether ``dt_ps`` resolves it. The χ1 rotamer rate is measured the same way.
Energies (kJ/mol, one value per frame, optional) follow the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mdtraj as md
import numpy as np
from deeptime.decomposition import TICA

from openmm_starmd.analysis.dynamics import MAX_ACF_LAG, autocorrelation, decorrelation_time, featurize
from openmm_starmd.analysis.ensemble import compare_ensemble, fit_ensemble_reference
from openmm_starmd.analysis.sidechains import compare_sidechains, fit_sidechain_reference
from openmm_starmd.errors import StarMDError

# metric -> (label, better); the ratio column is generated / MD for every metric
SIZE_MATCHED_METRICS: dict[str, tuple[str, str]] = {
    "torsion_jsd": ("Backbone φ/ψ JSD (mean)", "lower"),
    "chi1_jsd": ("χ1 JSD (mean over residues)", "lower"),
    "pc_jsd": ("PC1/PC2 JSD", "lower"),
    "rmsf_pearson_r": ("CA RMSF Pearson r", "higher"),
    "decorrelation_ratio": ("TIC1 decorrelation time / target's", "close to 1"),
    "rotamer_rate_ratio": ("χ1 rotamer transition rate / target's", "close to 1"),
    "energy_ks": ("Potential-energy KS statistic", "lower"),
    "energy_sd_ratio": ("Potential-energy sd / target's", "close to 1"),
    "energy_mean_shift_sd": ("Potential-energy mean shift (target sd)", "close to 0"),
}
MIN_FRAMES = 10
# Fewer first-half MD frames than this at the common interval give no decorrelation time or rotamer rate
# (a 5 ns reference holds 2-3 frames 1 ns apart); the report then says so instead of comparing with them.
MIN_DYNAMICS_FRAMES = 20


@dataclass
class SizeMatched:
    """Result of :func:`size_matched`.

    Attributes
    ----------
    frames
        N, frames on each side.
    generated, md
        Metric name -> value for the N generated frames and for the N first-half MD frames, each
        against the second halves (see :data:`SIZE_MATCHED_METRICS`; plus ``decorrelation_ps`` and
        ``rotamer_rate_per_ns``).
    target
        Values of the target itself: ``decorrelation_ps``, ``rotamer_rate_per_ns``, ``frames``, and
        energy mean and sd (kJ/mol) when energies were given; ``md_dynamics_frames``, the first-half MD
        frames the MD side's decorrelation time and rotamer rate come from (below
        :data:`MIN_DYNAMICS_FRAMES` they measure nothing).
    info
        Frame intervals, the TICA lag and how the halves were made.
    """

    frames: int
    generated: dict[str, float]
    md: dict[str, float]
    target: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def ratio(self, name: str) -> float:
        """generated / MD for ``name`` (NaN when undefined)."""
        a, b = self.generated.get(name, np.nan), self.md.get(name, np.nan)
        return float(a / b) if np.isfinite(a) and np.isfinite(b) and b != 0 else float("nan")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN stays float; the caller cleans it)."""
        return {"frames": self.frames, "generated": self.generated, "md": self.md,
                "ratio": {k: self.ratio(k) for k in self.generated}, "target": self.target, "info": self.info}


def even_indices(n_total: int, n: int) -> np.ndarray:
    """(≤ n,) sorted indices of ``n`` frames spread evenly over ``n_total``, first and last kept (the size matching)."""
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(int))


def _pooled(trajs: Sequence[md.Trajectory]) -> md.Trajectory:
    return md.join(list(trajs), check_topology=False) if len(trajs) > 1 else trajs[0]


def _tau(tica: object, kind: str, trajs: Sequence[md.Trajectory], frame_ps: float, max_lag: int) -> float:
    tics = [tica.transform(featurize(t, kind))[:, 0] for t in trajs if t.n_frames > 2]
    if not tics:
        return float("nan")
    return decorrelation_time(autocorrelation(tics, max_lag), frame_ps)


def _cut_to(trajs: list[md.Trajectory], n: int) -> list[md.Trajectory]:
    """Contiguous leading pieces of each trajectory, shortened in proportion so they hold about n frames."""
    total = sum(t.n_frames for t in trajs)
    if total <= n:
        return trajs
    return [t[: max(2, round(t.n_frames * n / total))] for t in trajs]


def size_matched(samples: Sequence[md.Trajectory], references: Sequence[md.Trajectory], dt_ps: float | None,
                 sample_stride: int = 1, reference_stride: int = 1, lag_ps: float | None = None,
                 kind: str = "torsions", sample_energies: Sequence[np.ndarray] | None = None,
                 reference_energies: Sequence[np.ndarray] | None = None) -> SizeMatched:
    """Score N generated frames and N first-half MD frames against the reference's second halves.

    Parameters
    ----------
    samples, references
        Generated trajectories and reference replicas with one common (matched) topology, nm.
    dt_ps
        Common frame interval (ps) of the dynamics metrics; ``samples[::sample_stride]`` and
        ``references[::reference_stride]`` are at it. None if unknown (times are then in frames).
    lag_ps
        TICA lag (ps; frames when ``dt_ps`` is None); default one reference frame. Shortened to fit
        the halves if needed.
    kind
        TICA features (``"torsions"`` or ``"distances"``).
    sample_energies, reference_energies
        Optional per-frame potential energies (kJ/mol), one (T_i,) array per trajectory, aligned with
        ``samples`` and ``references``.

    Returns
    -------
    SizeMatched
    """
    from openmm_starmd.analysis.energy import compare_energies

    if not samples or not references:
        raise StarMDError("size-matched comparison needs generated and reference trajectories")
    firsts = [r[: r.n_frames // 2] for r in references]
    seconds = [r[r.n_frames // 2:] for r in references]
    n_gen, n_first = sum(t.n_frames for t in samples), sum(t.n_frames for t in firsts)
    n = min(n_gen, n_first)
    if n < MIN_FRAMES or min(t.n_frames for t in seconds) < 4:
        raise StarMDError(f"size-matched comparison needs at least {MIN_FRAMES} frames on each side (generated "
                          f"{n_gen}, reference first halves {n_first}): give longer trajectories")
    gen_idx, md_idx = even_indices(n_gen, n), even_indices(n_first, n)
    gen = _pooled(samples)[gen_idx]
    md_first = _pooled(firsts)[md_idx]

    ens = fit_ensemble_reference(seconds)
    out_gen = compare_ensemble(ens, gen, pairwise=False, w2=False)
    out_md = compare_ensemble(ens, md_first, pairwise=False, w2=False)
    keep = ("torsion_jsd", "pc_jsd", "rmsf_pearson_r")
    result_gen = {k: out_gen[k] for k in keep}
    result_md = {k: out_md[k] for k in keep}

    # Dynamics at the common interval; the target at the reference's own interval.
    step = dt_ps if dt_ps else 1.0
    ref_frame = step / reference_stride
    dyn_gen = [t[::sample_stride] for t in samples]
    dyn_md = _cut_to([t[::reference_stride] for t in firsts], sum(t.n_frames for t in dyn_gen))
    shortest = min(t.n_frames for t in seconds)
    lag = 1 if lag_ps is None else max(1, round(lag_ps / ref_frame))
    lag = min(lag, max(1, shortest // 2 - 1))
    tica = TICA(lagtime=lag, dim=2).fit([featurize(t, kind) for t in seconds]).fetch_model()
    native_tau = _tau(tica, kind, seconds, ref_frame, min(shortest // 2, MAX_ACF_LAG))
    strided = [t[::reference_stride] for t in seconds]
    target_tau = _tau(tica, kind, strided, step, max(2, min(min(t.n_frames for t in strided) // 2, MAX_ACF_LAG)))
    for result, trajs in ((result_gen, dyn_gen), (result_md, dyn_md)):
        frames = min(t.n_frames for t in trajs)
        tau = _tau(tica, kind, trajs, step, max(2, min(frames // 2, MAX_ACF_LAG)))
        result["decorrelation_ps"] = tau
        result["decorrelation_ratio"] = tau / target_tau if target_tau > 0 else float("nan")

    side = fit_sidechain_reference(seconds, seconds, ref_frame)
    # The rate depends on the frame interval: the target's is measured at the common interval too.
    side_at_dt = fit_sidechain_reference(seconds, strided, step)
    for result, trajs, dyn in ((result_gen, gen, dyn_gen), (result_md, md_first, dyn_md)):
        metrics, _ = compare_sidechains(side_at_dt, trajs, dyn)
        result["chi1_jsd"] = metrics["chi1_jsd"]
        result["rotamer_rate_per_ns"] = metrics["rotamer_rate_per_ns"]
        result["rotamer_rate_ratio"] = metrics["rotamer_rate_ratio"]
    target = {"frames": sum(t.n_frames for t in seconds), "md_dynamics_frames": sum(t.n_frames for t in dyn_md),
              "decorrelation_ps": target_tau,
              "decorrelation_native_ps": native_tau, "decorrelation_resolved": bool(native_tau >= step),
              "rotamer_rate_per_ns": float(np.nanmean(side_at_dt.rates_per_ns))
              if np.isfinite(side_at_dt.rates_per_ns).any() else float("nan"),
              "rotamer_rate_native_per_ns": float(np.nanmean(side.rates_per_ns))
              if np.isfinite(side.rates_per_ns).any() else float("nan")}

    if sample_energies is not None and reference_energies is not None:
        e_gen = np.concatenate([np.asarray(e, dtype=np.float64) for e in sample_energies])[gen_idx]
        e_first = np.concatenate([np.asarray(e[: len(e) // 2], dtype=np.float64) for e in reference_energies])
        e_second = np.concatenate([np.asarray(e[len(e) // 2:], dtype=np.float64) for e in reference_energies])
        for result, values in ((result_gen, e_gen), (result_md, e_first[md_idx])):
            cmp = compare_energies(values, e_second)
            result.update(energy_ks=cmp["ks_statistic"], energy_ks_pvalue=cmp["ks_pvalue"],
                          energy_sd_ratio=cmp["sd_ratio"], energy_mean_shift_sd=cmp["mean_diff_in_ref_sd"],
                          energy_mean=cmp["mean_sample"], energy_sd=cmp["sd_sample"])
        target.update(energy_mean=float(np.nanmean(e_second)), energy_sd=float(np.nanstd(e_second, ddof=1)))
    info = {"dynamics_dt_ps": dt_ps, "reference_frame_ps": ref_frame if dt_ps else None,
            "tica_lag_frames": lag, "tica_features": kind,
            "halves": f"each of {len(references)} reference replica(s) cut in two; first halves pooled and evenly "
                      f"thinned to {n} frames, generated frames evenly thinned to {n}; second halves pooled "
                      f"({target['frames']} frames) are the target"}
    return SizeMatched(frames=n, generated=result_gen, md=result_md, target=target, info=info)


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def size_matched_markdown(result: SizeMatched) -> list[str]:
    """Markdown lines: one row per metric with the generated value, the MD floor and their ratio."""
    lines = [f"N = {result.frames} frames on each side. {result.info['halves']}.", "",
             "| Metric | Generated | MD (size-matched floor) | Generated / MD | Better |", "|---|---|---|---|---|"]
    for name, (label, better) in SIZE_MATCHED_METRICS.items():
        if name in result.generated:
            lines.append(f"| {label} | {_cell(result.generated[name])} | {_cell(result.md.get(name))} | "
                         f"{_cell(result.ratio(name), 2)} | {better} |")
    t = result.target
    unit = "ps" if result.info.get("dynamics_dt_ps") else "frames"
    lines += ["", f"Target TIC1 decorrelation time {_cell(t.get('decorrelation_ps'), 1)} {unit} at the common "
              f"interval, {_cell(t.get('decorrelation_native_ps'), 1)} {unit} at the reference's own"
              + ("" if t.get("decorrelation_resolved") else
                 " (shorter than one common-interval frame: the decorrelation ratios cannot resolve it)")
              + f"; χ1 rotamer transitions {_cell(t.get('rotamer_rate_per_ns'), 2)} per residue per ns at the common "
              f"interval ({_cell(t.get('rotamer_rate_native_per_ns'), 2)} at the reference's own)."]
    md_frames = t.get("md_dynamics_frames")
    if md_frames is not None and md_frames < MIN_DYNAMICS_FRAMES:
        lines.append(f"The MD side's decorrelation time and rotamer rate come from {md_frames} first-half frames at "
                     "the common interval, too few to measure either: compare the generated values with the "
                     "target's (a longer reference fixes this).")
    return lines


def size_matched_files(generated: Sequence[str], reference: Sequence[str], top: str, gen_top: str | None = None,
                       lag: str | int = "100ps", kind: str = "torsions",
                       sample_energies: Sequence[np.ndarray] | None = None,
                       reference_energies: Sequence[np.ndarray] | None = None) -> SizeMatched:
    """:func:`size_matched` of trajectory files, matched and brought to a common interval as ``starmd validate``
    does (``lag`` as frames or a time such as ``"100ps"``; energies aligned with the files' frames)."""
    from openmm_starmd.analysis.matching import load_trajectory, match_atoms, matched_pair
    from openmm_starmd.analysis.report import common_interval, frame_interval_ps, parse_lag

    refs = [load_trajectory(p, top) for p in reference]
    gens = [load_trajectory(p, gen_top or top) for p in generated]
    gen_idx, ref_idx = match_atoms(gens[0].topology, refs[0].topology)
    gens = [matched_pair(g, refs[0], gen_idx, ref_idx)[0] for g in gens]
    refs = [r.atom_slice(ref_idx) for r in refs]
    dt, s_stride, r_stride, _ = common_interval(frame_interval_ps(gens[0]), frame_interval_ps(refs[0]))
    lag_frames = parse_lag(lag, dt)
    return size_matched(gens, refs, dt, s_stride, r_stride, lag_ps=lag_frames * (dt or 1.0), kind=kind,
                        sample_energies=sample_energies, reference_energies=reference_energies)
