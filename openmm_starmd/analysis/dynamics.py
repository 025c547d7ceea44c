"""Dynamics (kinetic) metrics: TICA densities, TIC1 autocorrelation, VAMP-2, RMSD-vs-lag, decorrelation.

TICA and VAMP come from deeptime and are fitted on the reference. All trajectories compared must be
sampled at the same frame interval ``dt_ps`` (the caller resamples; see ``report.validate``). Lags
are given in frames. Units: times in ps, RMSD in nm, JSD in bits, autocorrelations dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np
from deeptime.decomposition import TICA, VAMP

from openmm_starmd.analysis import divergences as dv
from openmm_starmd.analysis.matching import ca_indices
from openmm_starmd.errors import StarMDError

FEATURES = ("torsions", "distances")
TIC_BINS = 20         # per TIC axis of the 2-D TIC1/TIC2 histogram
VAMP_DIM = 10         # singular functions summed in the VAMP-2 score (plus the constant one)
MAX_ACF_LAG = 500     # frames
RMSD_LAG_POINTS = 16  # lags (log-spaced) on the RMSD-vs-lag curve
RMSD_LAG_ORIGINS = 100  # time origins per trajectory for the RMSD-vs-lag curve
DECORRELATION_LEVEL = 1.0 / np.e


def _as_list(trajs: md.Trajectory | list[md.Trajectory]) -> list[md.Trajectory]:
    return [trajs] if isinstance(trajs, md.Trajectory) else list(trajs)


def featurize(traj: md.Trajectory, kind: str = "torsions") -> np.ndarray:
    """Features for TICA/VAMP.

    Parameters
    ----------
    traj
        Trajectory (nm).
    kind
        ``"torsions"``: sin and cos of every backbone φ and ψ; ``"distances"``: CA–CA distances (nm)
        of all residue pairs at least 3 apart in sequence.

    Returns
    -------
    numpy.ndarray
        (T, F) float64 features.
    """
    if kind == "torsions":
        angles = np.concatenate([md.compute_phi(traj, periodic=False)[1],
                                 md.compute_psi(traj, periodic=False)[1]], axis=1)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float64)
    if kind == "distances":
        ca = ca_indices(traj.topology)
        pairs = np.array([(ca[i], ca[j]) for i in range(len(ca)) for j in range(i + 3, len(ca))])
        return md.compute_distances(traj, pairs, periodic=False).astype(np.float64)
    raise StarMDError(f"unknown feature kind {kind!r}: choose one of {', '.join(FEATURES)}")


def autocorrelation(series: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Normalised autocorrelation C(τ) of a scalar observable, pooled over trajectories.

    Each trajectory is centred on the pooled mean and C is divided by the pooled variance, so
    C(0) = 1; lags longer than a trajectory use only the trajectories that reach them.

    Parameters
    ----------
    series
        List of (T_i,) arrays.
    max_lag
        Largest lag in frames.

    Returns
    -------
    numpy.ndarray
        (max_lag + 1,) C at lags 0..max_lag frames (NaN where no trajectory is long enough).
    """
    pooled = np.concatenate(series)
    mu, var = pooled.mean(), pooled.var()
    sums = np.zeros(max_lag + 1)
    counts = np.zeros(max_lag + 1)
    for x in series:
        x = x - mu
        n = len(x)
        size = 1 << int(np.ceil(np.log2(2 * n)))
        f = np.fft.rfft(x, size)
        corr = np.fft.irfft(f * np.conj(f), size)[: min(n, max_lag + 1)]
        sums[: len(corr)] += corr
        counts[: len(corr)] += np.arange(n, n - len(corr), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts / var if var > 0 else np.full(max_lag + 1, np.nan)


def decorrelation_time(acf: np.ndarray, dt_ps: float) -> float:
    """First time (ps, linear interpolation) at which ``acf`` drops below 1/e; NaN if it never does."""
    below = np.nonzero(acf < DECORRELATION_LEVEL)[0]
    if len(below) == 0 or below[0] == 0:
        return float("nan")
    k = below[0]
    frac = (acf[k - 1] - DECORRELATION_LEVEL) / (acf[k - 1] - acf[k])
    return float((k - 1 + frac) * dt_ps)


def rmsd_lag_curve(trajs: md.Trajectory | list[md.Trajectory], lags: np.ndarray,
                   origins: int = RMSD_LAG_ORIGINS) -> np.ndarray:
    """Mean CA RMSD (pairwise superposed) between frames τ apart, for each lag τ.

    Parameters
    ----------
    trajs
        Trajectories at a common frame interval.
    lags
        (L,) lags in frames (≥ 1).
    origins
        Evenly spaced time origins used per trajectory.

    Returns
    -------
    numpy.ndarray
        (L,) mean RMSD in nm (NaN for lags longer than every trajectory).
    """
    lags = np.asarray(lags, dtype=int)
    sums = np.zeros(len(lags))
    counts = np.zeros(len(lags))
    for traj in _as_list(trajs):
        sub = traj.atom_slice(ca_indices(traj.topology))
        sub.center_coordinates()
        last = sub.n_frames - 1 - lags.min()
        if last < 0:
            continue
        for i in np.unique(np.linspace(0, last, min(origins, last + 1)).round().astype(int)):
            ok = i + lags < sub.n_frames
            values = md.rmsd(sub, sub, frame=int(i), precentered=True, parallel=False)[i + lags[ok]]
            sums[ok] += values
            counts[ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def lag_grid(max_lag: int, points: int = RMSD_LAG_POINTS) -> np.ndarray:
    """About ``points`` distinct log-spaced lags from 1 to ``max_lag`` frames."""
    return np.unique(np.geomspace(1, max(max_lag, 1), points).round().astype(int))


def vamp2_score(features: list[np.ndarray], lag: int) -> float:
    """VAMP-2 score (deeptime, including the constant singular function) of features at ``lag`` frames."""
    dim = min(VAMP_DIM, features[0].shape[1])
    model = VAMP(lagtime=lag, dim=dim).fit([f for f in features if len(f) > lag]).fetch_model()
    return float(model.score(2))


@dataclass
class DynamicsReference:
    """The reference dynamics, fitted once (see :func:`fit_dynamics_reference`).

    Attributes
    ----------
    kind, lag, dt_ps, max_lag
        Feature kind, TICA/VAMP lag (frames), frame interval (ps), longest ACF lag (frames).
    tica
        deeptime TICA model (2 components) fitted on the reference features.
    tics
        List of (T_i, 2) reference TIC1/TIC2 coordinates.
    tic_edges, tic_hist
        Bin edges and normalised (TIC_BINS, TIC_BINS) histogram of the reference TICs.
    acf, rmsd_lags, rmsd_curve, vamp2, tau_ps
        Reference TIC1 autocorrelation (max_lag + 1,), lag grid (frames) and mean RMSD (nm) at those
        lags, VAMP-2 score and TIC1 decorrelation time (ps).
    """

    kind: str
    lag: int
    dt_ps: float
    max_lag: int
    tica: object
    tics: list[np.ndarray]
    tic_edges: list[np.ndarray]
    tic_hist: np.ndarray
    acf: np.ndarray
    rmsd_lags: np.ndarray
    rmsd_curve: np.ndarray
    vamp2: float
    tau_ps: float

    def project(self, trajs: md.Trajectory | list[md.Trajectory]) -> list[np.ndarray]:
        """TIC1/TIC2 coordinates, one (T_i, 2) array per trajectory."""
        return [self.tica.transform(featurize(t, self.kind)) for t in _as_list(trajs)]


def fit_dynamics_reference(trajs: md.Trajectory | list[md.Trajectory], lag: int, dt_ps: float,
                           kind: str = "torsions", max_lag: int | None = None) -> DynamicsReference:
    """Fit TICA (deeptime) on the reference and compute its kinetic observables.

    Parameters
    ----------
    trajs
        Reference replicas at frame interval ``dt_ps``.
    lag
        TICA and VAMP lag time in frames (≥ 1).
    dt_ps
        Time between frames in ps.
    kind
        Feature kind, see :func:`featurize`.
    max_lag
        Longest autocorrelation lag in frames (default: half the shortest trajectory, at most
        MAX_ACF_LAG).
    """
    trajs = _as_list(trajs)
    shortest = min(t.n_frames for t in trajs)
    if lag < 1 or lag >= shortest // 2:
        raise StarMDError(f"lag of {lag} frames does not fit trajectories of {shortest} frames: "
                          f"choose --lag between 1 frame and {max(shortest // 2 - 1, 1)} frames")
    max_lag = max_lag if max_lag is not None else min(shortest // 2, MAX_ACF_LAG)
    features = [featurize(t, kind) for t in trajs]
    tica = TICA(lagtime=lag, dim=2).fit(features).fetch_model()
    tics = [tica.transform(f) for f in features]
    edges = dv.histogram_edges(np.concatenate(tics), TIC_BINS)
    acf = autocorrelation([x[:, 0] for x in tics], max_lag)
    lags = lag_grid(max_lag)
    return DynamicsReference(
        kind=kind, lag=lag, dt_ps=dt_ps, max_lag=max_lag, tica=tica, tics=tics, tic_edges=edges,
        tic_hist=dv.histogram(np.concatenate(tics), edges), acf=acf, rmsd_lags=lags,
        rmsd_curve=rmsd_lag_curve(trajs, lags), vamp2=vamp2_score(features, lag),
        tau_ps=decorrelation_time(acf, dt_ps),
    )


def compare_dynamics(ref: DynamicsReference, trajs: md.Trajectory | list[md.Trajectory]
                     ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Dynamics metrics of a sample (same frame interval as the reference) against the reference.

    Returns
    -------
    (metrics, curves)
        metrics: ``tic_jsd`` (2-D TIC1/TIC2 histogram, bits), ``tic1_jsd`` (1-D), ``acf_area_ps``
        (∫|C_sample − C_ref| dτ over 0..max_lag, ps), ``vamp2_diff`` (|VAMP-2 sample − reference|),
        ``rmsd_lag_diff_nm`` (mean |difference| of the RMSD-vs-lag curves), ``decorrelation_ratio``
        (TIC1 decorrelation time sample / reference; NaN if either never drops below 1/e),
        ``decorrelation_ps`` and ``decorrelation_ref_ps``. curves: ``acf`` (max_lag + 1,) and ``rmsd_curve`` (L,).
    """
    trajs = _as_list(trajs)
    too_short = [t.n_frames for t in trajs if t.n_frames <= ref.lag + 1]
    if too_short:
        raise StarMDError(f"a trajectory of {too_short[0]} frames is too short for lag {ref.lag} frames: "
                          "give longer trajectories or a smaller --lag")
    features = [featurize(t, ref.kind) for t in trajs]
    tics = [ref.tica.transform(f) for f in features]
    pooled = np.concatenate(tics)
    acf = autocorrelation([x[:, 0] for x in tics], ref.max_lag)
    diff = np.abs(acf - ref.acf)
    valid = np.isfinite(diff)
    curve = rmsd_lag_curve(trajs, ref.rmsd_lags)
    tau = decorrelation_time(acf, ref.dt_ps)
    edges1 = [ref.tic_edges[0]]
    metrics = {
        "tic_jsd": dv.jensen_shannon(dv.histogram(pooled, ref.tic_edges), ref.tic_hist),
        "tic1_jsd": dv.jensen_shannon(dv.histogram(pooled[:, 0], edges1),
                                      dv.histogram(np.concatenate(ref.tics)[:, 0], edges1)),
        "acf_area_ps": float(np.trapezoid(diff[valid], dx=ref.dt_ps)) if valid.sum() > 1 else float("nan"),
        "vamp2_diff": abs(vamp2_score(features, ref.lag) - ref.vamp2),
        "rmsd_lag_diff_nm": float(np.nanmean(np.abs(curve - ref.rmsd_curve))),
        "decorrelation_ps": tau,
        "decorrelation_ref_ps": ref.tau_ps,
        "decorrelation_ratio": (tau / ref.tau_ps if np.isfinite(ref.tau_ps) and ref.tau_ps > 0
                                else float("nan")),
    }
    return metrics, {"acf": acf, "rmsd_curve": curve}


def dynamics_metrics(sample: md.Trajectory | list[md.Trajectory],
                     reference: md.Trajectory | list[md.Trajectory],
                     lag: int, dt_ps: float, kind: str = "torsions") -> dict[str, float]:
    """Fit the reference and compare the sample in one call; see :func:`compare_dynamics`."""
    return compare_dynamics(fit_dynamics_reference(reference, lag, dt_ps, kind), sample)[0]
