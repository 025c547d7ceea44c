"""Ensemble (equilibrium) metrics: RMSF, pairwise RMSD, PCA densities, backbone torsion histograms.

The reference is fitted once (:func:`fit_ensemble_reference`): its mean structure, RMSF, principal
components of the aligned CA coordinates and all histograms. Any number of samples (a generated
ensemble, the MD-vs-MD floor, the windows of a long rollout) are then compared against it with
:func:`compare_ensemble`. :func:`ensemble_metrics` does both in one call.

Units: coordinates, RMSF, RMSD and principal components in nm; torsions in radians; JSD in bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj as md
import numpy as np

from openmm_starmd.analysis import divergences as dv
from openmm_starmd.analysis.matching import align, ca_indices, mean_structure

PC_BINS = 20          # per PC axis of the 2-D PC1/PC2 histogram
TORSION_BINS = 50     # per φ or ψ histogram over [-π, π)
RMSD_BINS = 50        # pairwise-RMSD histogram
PAIRWISE_MAX_FRAMES = 300  # frames kept (evenly) for the pairwise RMSD matrix


def _as_list(trajs: md.Trajectory | list[md.Trajectory]) -> list[md.Trajectory]:
    return [trajs] if isinstance(trajs, md.Trajectory) else list(trajs)


def _ca_only(trajs: md.Trajectory | list[md.Trajectory]) -> list[md.Trajectory]:
    """CA-only copies (one shared topology): every superposition below then touches N atoms only."""
    trajs = _as_list(trajs)
    ca = ca_indices(trajs[0].topology)
    top = trajs[0].topology.subset(ca)
    return [md.Trajectory(t.xyz[:, ca], top) for t in trajs]


def ca_rmsf(trajs: md.Trajectory | list[md.Trajectory]) -> np.ndarray:
    """Per-residue CA root-mean-square fluctuation about the ensemble's own mean structure.

    Parameters
    ----------
    trajs
        One trajectory or several replicas of the same system (pooled).

    Returns
    -------
    numpy.ndarray
        (N,) RMSF per residue in nm, after superposition of every frame on the mean CA structure.
    """
    trajs = _ca_only(trajs)
    mean = mean_structure(trajs, None)
    sq = np.zeros(trajs[0].n_atoms)
    count = 0
    for traj in trajs:
        fitted = align(traj, mean, None).xyz.astype(np.float64)
        sq += ((fitted - mean.xyz[0]) ** 2).sum(axis=-1).sum(axis=0)
        count += traj.n_frames
    return np.sqrt(sq / count)


def pairwise_rmsd(trajs: md.Trajectory | list[md.Trajectory],
                  max_frames: int = PAIRWISE_MAX_FRAMES) -> np.ndarray:
    """CA RMSD (each pair optimally superposed) between all pairs of up to ``max_frames`` frames.

    Returns
    -------
    numpy.ndarray
        (P,) RMSD values in nm, P = F (F - 1) / 2 for the F frames kept (evenly spaced, pooled).
    """
    trajs = _ca_only(trajs)
    xyz = np.concatenate([t.xyz for t in trajs])
    keep = np.unique(np.linspace(0, len(xyz) - 1, min(max_frames, len(xyz))).round().astype(int))
    sub = md.Trajectory(xyz[keep], trajs[0].topology)
    sub.center_coordinates()
    values = [md.rmsd(sub, sub, frame=i, precentered=True, parallel=False)[i + 1:]
              for i in range(sub.n_frames - 1)]
    return np.concatenate(values) if values else np.zeros(0)


def backbone_torsions(trajs: md.Trajectory | list[md.Trajectory]) -> tuple[np.ndarray, list[str]]:
    """All backbone φ and ψ torsions of the pooled frames.

    Returns
    -------
    (angles, labels)
        (S, K) angles in radians in [-π, π] and K labels such as ``phi:ALA2``.
    """
    trajs = _as_list(trajs)
    top = trajs[0].topology
    parts = []
    labels: list[str] = []
    for name, fn in (("phi", md.compute_phi), ("psi", md.compute_psi)):
        idx, _ = fn(trajs[0][:1], periodic=False)
        labels += [f"{name}:{top.atom(int(quad[1])).residue}" for quad in idx]
        parts.append(np.concatenate([fn(t, periodic=False)[1] for t in trajs]))
    return np.concatenate(parts, axis=1), labels


def _torsion_edges() -> list[np.ndarray]:
    return [np.linspace(-np.pi, np.pi, TORSION_BINS + 1)]


@dataclass
class EnsembleReference:
    """The reference ensemble, fitted once and compared against many samples.

    Attributes
    ----------
    mean
        One-frame CA-only trajectory: iteratively aligned mean CA structure (nm).
    ca
        (N,) CA atom indices in the full topology.
    rmsf
        (N,) reference CA RMSF (nm).
    pca_center, pca_axes
        (3N,) mean and (2, 3N) unit principal axes of the aligned, flattened CA coordinates.
    pcs
        (S, 2) reference PC1/PC2 projections (nm).
    pc_edges, pc_hist
        Bin edges and normalised (PC_BINS, PC_BINS) histogram of ``pcs``.
    torsions, torsion_labels, torsion_hists
        (S, K) reference φ/ψ angles (rad), their labels and (K, TORSION_BINS) histograms.
    pairwise, rmsd_edges
        Reference pairwise CA RMSDs (nm) and the edges of their histogram.
    """

    mean: md.Trajectory
    ca: np.ndarray
    rmsf: np.ndarray
    pca_center: np.ndarray
    pca_axes: np.ndarray
    pcs: np.ndarray
    pc_edges: list[np.ndarray]
    pc_hist: np.ndarray
    torsions: np.ndarray
    torsion_labels: list[str]
    torsion_hists: np.ndarray
    pairwise: np.ndarray
    rmsd_edges: list[np.ndarray]

    def project(self, trajs: md.Trajectory | list[md.Trajectory]) -> np.ndarray:
        """PC1/PC2 coordinates (S, 2) in nm of frames superposed on the reference mean structure."""
        flat = np.concatenate([align(t, self.mean, None).xyz.reshape(t.n_frames, -1)
                               for t in _ca_only(trajs)]).astype(np.float64)
        return (flat - self.pca_center) @ self.pca_axes.T


def fit_ensemble_reference(trajs: md.Trajectory | list[md.Trajectory]) -> EnsembleReference:
    """Fit the reference: mean structure, RMSF, PCA of aligned CA coordinates, histograms.

    Parameters
    ----------
    trajs
        Reference replicas (same topology), pooled.
    """
    trajs = _as_list(trajs)
    ca = ca_indices(trajs[0].topology)
    ca_trajs = _ca_only(trajs)
    mean = mean_structure(ca_trajs, None)
    flat = np.concatenate([align(t, mean, None).xyz.reshape(t.n_frames, -1) for t in ca_trajs])
    flat = flat.astype(np.float64)
    center = flat.mean(axis=0)
    # Frames are superposed on their own mean, so the RMSF is the per-atom spread about ``center``.
    rmsf = np.sqrt(((flat - center) ** 2).reshape(len(flat), -1, 3).sum(axis=-1).mean(axis=0))
    _, _, vt = np.linalg.svd(flat - center, full_matrices=False)
    axes = vt[:2]
    # Fix each axis's sign so the PCs of one reference never flip between runs.
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    pcs = (flat - center) @ axes.T
    pc_edges = dv.histogram_edges(pcs, PC_BINS)
    torsions, labels = backbone_torsions(trajs)
    t_edges = _torsion_edges()
    pairwise = pairwise_rmsd(trajs)
    return EnsembleReference(
        mean=mean, ca=ca, rmsf=rmsf, pca_center=center, pca_axes=axes, pcs=pcs,
        pc_edges=pc_edges, pc_hist=dv.histogram(pcs, pc_edges), torsions=torsions, torsion_labels=labels,
        torsion_hists=np.stack([dv.histogram(torsions[:, k], t_edges) for k in range(torsions.shape[1])]),
        pairwise=pairwise, rmsd_edges=dv.histogram_edges(pairwise, RMSD_BINS),
    )


def compare_ensemble(ref: EnsembleReference, trajs: md.Trajectory | list[md.Trajectory],
                     pairwise: bool = True, w2: bool = True) -> dict[str, float]:
    """Ensemble metrics of a sample against a fitted reference.

    Parameters
    ----------
    ref
        From :func:`fit_ensemble_reference`.
    trajs
        Sample trajectories with the reference's (matched) topology.
    pairwise, w2
        Also compute the pairwise-RMSD metrics and the PC Wasserstein-2 distance (the costly parts).

    Returns
    -------
    dict
        ``rmsf_pearson_r`` (Pearson r of per-residue CA RMSF), ``rmsf_mae_nm``, ``pc_jsd`` (bits),
        ``pc_recall`` (share of reference-occupied PC bins visited), ``torsion_jsd`` (mean over φ/ψ
        of the per-torsion JSD, bits), with ``w2`` ``pc_w2_nm`` (exact
        Wasserstein-2 on PC1/PC2, nm) and with ``pairwise``
        ``pairwise_rmsd_nm`` (sample mean), ``pairwise_rmsd_ref_nm``, ``pairwise_rmsd_diff_nm``
        (absolute difference of the means) and ``pairwise_rmsd_jsd``.
    """
    trajs = _as_list(trajs)
    rmsf = ca_rmsf(trajs)
    pcs = ref.project(trajs)
    pc_hist = dv.histogram(pcs, ref.pc_edges)
    torsions, _ = backbone_torsions(trajs)
    t_edges = _torsion_edges()
    jsd_t = [dv.jensen_shannon(dv.histogram(torsions[:, k], t_edges), ref.torsion_hists[k])
             for k in range(torsions.shape[1])]
    out = {
        "rmsf_pearson_r": dv.pearson(rmsf, ref.rmsf),
        "rmsf_mae_nm": float(np.abs(rmsf - ref.rmsf).mean()),
        "pc_jsd": dv.jensen_shannon(pc_hist, ref.pc_hist),
        "pc_recall": dv.recall(pc_hist, ref.pc_hist),
        "torsion_jsd": float(np.mean(jsd_t)) if jsd_t else float("nan"),
    }
    if w2:
        out["pc_w2_nm"] = dv.wasserstein2(pcs, ref.pcs)
    if pairwise:
        values = pairwise_rmsd(trajs)
        out["pairwise_rmsd_nm"] = float(values.mean())
        out["pairwise_rmsd_ref_nm"] = float(ref.pairwise.mean())
        out["pairwise_rmsd_diff_nm"] = abs(out["pairwise_rmsd_nm"] - out["pairwise_rmsd_ref_nm"])
        out["pairwise_rmsd_jsd"] = dv.jensen_shannon(dv.histogram(values, ref.rmsd_edges),
                                                     dv.histogram(ref.pairwise, ref.rmsd_edges))
    return out


def ensemble_metrics(sample: md.Trajectory | list[md.Trajectory],
                     reference: md.Trajectory | list[md.Trajectory]) -> dict[str, float]:
    """Fit the reference and compare the sample in one call; see :func:`compare_ensemble`.

    Both must have the same topology (use :func:`~openmm_starmd.analysis.matching.matched_pair`).
    """
    return compare_ensemble(fit_ensemble_reference(reference), sample)
