"""Distances between two sampled distributions: histogram JSD and recall, Wasserstein-2, Pearson r.

All functions are deterministic. Histogram bins are fixed by the caller (normally from the
reference), so that a sample and the MD-vs-MD floor are measured on the same grid.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

# Most points used for the exact (assignment) Wasserstein-2 estimate; O(n^3) beyond that.
W2_MAX_POINTS = 1000


def histogram_edges(values: np.ndarray, bins: int, margin: float = 0.1) -> list[np.ndarray]:
    """Bin edges per column spanning the range of ``values`` widened by ``margin`` on each side.

    Parameters
    ----------
    values
        (S, D) samples (any unit).
    bins
        Bins per dimension.
    margin
        Extra width on each side, as a fraction of the range.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64).T).T
    edges = []
    for column in values.T:
        lo, hi = float(column.min()), float(column.max())
        pad = margin * (hi - lo) if hi > lo else 0.5
        edges.append(np.linspace(lo - pad, hi + pad, bins + 1))
    return edges


def histogram(values: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Normalised D-dimensional histogram; points outside the edges go to the nearest edge bin.

    Parameters
    ----------
    values
        (S, D) samples.
    edges
        D arrays of increasing bin edges.

    Returns
    -------
    numpy.ndarray
        Probabilities of shape (bins_1, ..., bins_D), summing to 1.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64).T).T
    # Clipping keeps the mass of out-of-range points: a sample that leaves the reference region
    # must still count against it.
    clipped = np.column_stack([np.clip(values[:, d], e[0], e[-1]) for d, e in enumerate(edges)])
    counts, _ = np.histogramdd(clipped, bins=edges)
    return counts / max(counts.sum(), 1.0)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (0 for identical, 1 for disjoint) of two histograms."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def _kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.5 * _kl(p) + 0.5 * _kl(q), 0.0)


def recall(sample_hist: np.ndarray, reference_hist: np.ndarray) -> float:
    """Share of the reference-occupied bins that the sample also visits (1 = full coverage)."""
    occupied = reference_hist > 0
    return float(np.count_nonzero(sample_hist[occupied] > 0) / max(np.count_nonzero(occupied), 1))


def _even_subsample(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) <= n:
        return values
    return values[np.linspace(0, len(values) - 1, n).round().astype(int)]


def wasserstein2(a: np.ndarray, b: np.ndarray, max_points: int = W2_MAX_POINTS) -> float:
    """Wasserstein-2 distance between two point clouds, by exact optimal assignment.

    Both clouds are evenly subsampled (in order: frames of a trajectory) to the same size
    ``min(len(a), len(b), max_points)``, for which optimal transport with uniform weights is an
    assignment problem.

    Parameters
    ----------
    a, b
        (S_a, D) and (S_b, D) samples in the same unit; the result has that unit.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64).T).T
    b = np.atleast_2d(np.asarray(b, dtype=np.float64).T).T
    n = min(len(a), len(b), max_points)
    a, b = _even_subsample(a, n), _even_subsample(b, n)
    cost = cdist(a, b, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors (NaN when either is constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.std() == 0.0 or y.std() == 0.0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
