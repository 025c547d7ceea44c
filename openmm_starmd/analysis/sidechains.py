"""Side-chain metrics: per-residue χ1/χ2 histogram JSD and the χ1 rotamer transition rate.

mdtraj computes the χ angles (``periodic=False``: implicit-solvent files may carry a bogus box).
χ1 is assigned to one of three rotamer wells by its angle: g+ in [0°, 120°), g− in [−120°, 0°) and
t otherwise (|χ1| ≥ 120°). A transition is a change of well between consecutive frames, so the rate
(transitions per residue per ns) depends on the frame interval: compare trajectories only at one
common interval (``starmd validate`` strides both to it). Proline is left out of the rate (NaN): its
χ1 is a ring pucker oscillating about ±30°, across the g+/g− boundary at 0°, not a rotamer change.

Units: angles in radians, JSD in bits, rates per ns.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np

from openmm_starmd.analysis import divergences as dv

CHI_BINS = 36  # 10° bins over [-π, π)
ROTAMER_NAMES = ("g+", "t", "g-")
_CHI_FUNCTIONS = {1: md.compute_chi1, 2: md.compute_chi2}


def _as_list(trajs: md.Trajectory | list[md.Trajectory]) -> list[md.Trajectory]:
    return [trajs] if isinstance(trajs, md.Trajectory) else list(trajs)


def chi_angles(trajs: md.Trajectory | list[md.Trajectory], order: int) -> tuple[list[np.ndarray], list[str]]:
    """χ1 or χ2 of every residue that has it, one array per trajectory.

    Parameters
    ----------
    trajs
        Trajectories with one common topology (nm).
    order
        1 or 2.

    Returns
    -------
    (angles, residues)
        List of (T_i, R) arrays in radians in [-π, π] and R residue labels such as ``TYR2``; R is 0
        for a backbone-only topology.
    """
    trajs = _as_list(trajs)
    fn = _CHI_FUNCTIONS[order]
    idx, _ = fn(trajs[0][:1], periodic=False)
    labels = [str(trajs[0].topology.atom(int(quad[1])).residue) for quad in idx]
    if len(idx) == 0:
        return [np.zeros((t.n_frames, 0)) for t in trajs], labels
    return [fn(t, periodic=False)[1].astype(np.float64) for t in trajs], labels


def rotamer_wells(chi1: np.ndarray) -> np.ndarray:
    """Rotamer well of each χ1 value (rad): 0 = g+ [0°, 120°), 1 = t (|χ1| ≥ 120°), 2 = g− [−120°, 0°)."""
    deg = np.degrees(np.asarray(chi1))
    wells = np.ones(deg.shape, dtype=np.int8)
    wells[(deg >= 0.0) & (deg < 120.0)] = 0
    wells[(deg < 0.0) & (deg >= -120.0)] = 2
    return wells


def transition_rates(chi1: list[np.ndarray], frame_ps: float, residues: list[str] | None = None) -> np.ndarray:
    """χ1 rotamer-well changes per residue per ns, pooled over trajectories.

    Parameters
    ----------
    chi1
        List of (T_i, R) χ1 arrays (rad), consecutive frames ``frame_ps`` apart.
    frame_ps
        Time between frames, ps.
    residues
        (R,) residue labels (``PRO4``); prolines get NaN.

    Returns
    -------
    numpy.ndarray
        (R,) transitions per ns (NaN if no trajectory has two frames).
    """
    R = chi1[0].shape[1]
    changes = np.zeros(R)
    steps = 0
    for x in chi1:
        if len(x) < 2:
            continue
        wells = rotamer_wells(x)
        changes += (wells[1:] != wells[:-1]).sum(axis=0)
        steps += len(x) - 1
    if steps == 0:
        return np.full(R, np.nan)
    rates = changes / (steps * frame_ps * 1e-3)
    if residues is not None:
        rates[[label.startswith("PRO") for label in residues]] = np.nan
    return rates


def _histograms(angles: np.ndarray) -> np.ndarray:
    edges = [np.linspace(-np.pi, np.pi, CHI_BINS + 1)]
    return np.stack([dv.histogram(angles[:, k], edges) for k in range(angles.shape[1])]) if angles.shape[1] \
        else np.zeros((0, CHI_BINS))


@dataclass
class SidechainReference:
    """χ1/χ2 histograms and the χ1 transition rate of the reference, fitted once.

    Attributes
    ----------
    chi1_residues, chi2_residues
        Labels of the residues that have χ1 (R1) and χ2 (R2).
    chi1_hists, chi2_hists
        (R1, CHI_BINS) and (R2, CHI_BINS) normalised histograms.
    rates_per_ns
        (R1,) χ1 rotamer transitions per ns at the dynamics interval ``frame_ps`` (NaN for proline).
    frame_ps
        Frame interval of the trajectories the rate was measured on, ps.
    """

    chi1_residues: list[str]
    chi2_residues: list[str]
    chi1_hists: np.ndarray
    chi2_hists: np.ndarray
    rates_per_ns: np.ndarray
    frame_ps: float


def fit_sidechain_reference(trajs: md.Trajectory | list[md.Trajectory],
                            dyn_trajs: md.Trajectory | list[md.Trajectory], frame_ps: float) -> SidechainReference:
    """Histograms from ``trajs`` (every frame), transition rates from ``dyn_trajs`` (frames ``frame_ps`` apart)."""
    chi1, res1 = chi_angles(trajs, 1)
    chi2, res2 = chi_angles(trajs, 2)
    dyn_chi1, _ = chi_angles(dyn_trajs, 1)
    return SidechainReference(
        chi1_residues=res1, chi2_residues=res2, chi1_hists=_histograms(np.concatenate(chi1)),
        chi2_hists=_histograms(np.concatenate(chi2)), rates_per_ns=transition_rates(dyn_chi1, frame_ps, res1),
        frame_ps=frame_ps)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def compare_sidechains(ref: SidechainReference, trajs: md.Trajectory | list[md.Trajectory],
                       dyn_trajs: md.Trajectory | list[md.Trajectory] | None = None
                       ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """χ metrics of a sample against the reference.

    Parameters
    ----------
    ref
        From :func:`fit_sidechain_reference`.
    trajs
        Sample trajectories (matched topology); every frame enters the histograms.
    dyn_trajs
        The same at the reference's dynamics interval ``ref.frame_ps`` (default ``trajs``).

    Returns
    -------
    (metrics, per_residue)
        metrics: ``chi1_jsd``, ``chi2_jsd`` (mean over residues of the per-residue JSD, bits; NaN if
        the sample has no side chains), ``rotamer_rate_per_ns`` (mean χ1 transitions per residue per
        ns), ``rotamer_rate_ref_per_ns`` and ``rotamer_rate_ratio`` (sample / reference).
        per_residue: ``chi1_jsd`` (R1,), ``chi2_jsd`` (R2,), ``rotamer_rate_per_ns`` (R1,).
    """
    chi1, res1 = chi_angles(trajs, 1)
    chi2, res2 = chi_angles(trajs, 2)
    nan = float("nan")
    if res1 != ref.chi1_residues or res2 != ref.chi2_residues:
        # A backbone-only sample has no χ; any other mismatch means the topologies differ.
        R1, R2 = len(ref.chi1_residues), len(ref.chi2_residues)
        empty = {"chi1_jsd": np.full(R1, np.nan), "chi2_jsd": np.full(R2, np.nan),
                 "rotamer_rate_per_ns": np.full(R1, np.nan)}
        return ({"chi1_jsd": nan, "chi2_jsd": nan, "rotamer_rate_per_ns": nan,
                 "rotamer_rate_ref_per_ns": _mean(ref.rates_per_ns), "rotamer_rate_ratio": nan}, empty)
    jsd1 = np.array([dv.jensen_shannon(h, r) for h, r in zip(_histograms(np.concatenate(chi1)), ref.chi1_hists,
                                                               strict=True)])
    jsd2 = np.array([dv.jensen_shannon(h, r) for h, r in zip(_histograms(np.concatenate(chi2)), ref.chi2_hists,
                                                               strict=True)])
    dyn_chi1 = chi1 if dyn_trajs is None else chi_angles(dyn_trajs, 1)[0]
    rates = transition_rates(dyn_chi1, ref.frame_ps, res1)
    rate, ref_rate = _mean(rates), _mean(ref.rates_per_ns)
    metrics = {"chi1_jsd": _mean(jsd1), "chi2_jsd": _mean(jsd2), "rotamer_rate_per_ns": rate,
               "rotamer_rate_ref_per_ns": ref_rate,
               "rotamer_rate_ratio": rate / ref_rate if ref_rate > 0 else nan}
    return metrics, {"chi1_jsd": jsd1, "chi2_jsd": jsd2, "rotamer_rate_per_ns": rates}
