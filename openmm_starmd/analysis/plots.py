"""PNG figures of a :class:`~openmm_starmd.analysis.compare.Comparison` (matplotlib, Agg backend).

Reference MD is always drawn in grey/black and the generated ensemble in colour, with the same bins
and colour scale on side-by-side panels so densities can be compared by eye.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from openmm_starmd.analysis import divergences as dv
from openmm_starmd.analysis.compare import Comparison
from openmm_starmd.atomic import atomic_write

REF_COLOR, GEN_COLOR, FLOOR_COLOR = "0.25", "tab:red", "tab:blue"
DENSITY_BINS = 40
DPI = 110


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    plt.close(fig)


def _time_axis(n: int, frame_ps: float | None) -> tuple[np.ndarray, str]:
    if frame_ps:
        scale, unit = (1e-3, "ns") if n * frame_ps >= 2000 else (1.0, "ps")
        return np.arange(n) * frame_ps * scale, f"time ({unit})"
    return np.arange(n), "frame"


def plot_rmsf(cmp: Comparison, path: Path) -> None:
    """Per-residue CA RMSF of reference and generated ensembles."""
    d = cmp.data
    x = np.arange(len(d["residues"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(x)), 3.2), constrained_layout=True)
    ax.plot(x, d["rmsf_reference"], "o-", color=REF_COLOR, label="reference MD")
    ax.plot(x, d["rmsf_sample"], "s-", color=GEN_COLOR, label="generated")
    ax.set_xticks(x, d["residues"], rotation=90 if len(x) > 12 else 45, fontsize=8)
    ax.set_ylabel("CA RMSF (nm)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"CA RMSF per residue (Pearson r = {cmp.metrics['rmsf_pearson_r']:.2f}, "
                 f"MD floor {cmp.floor['rmsf_pearson_r']:.2f})", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def _density_pair(ref: np.ndarray, gen: np.ndarray, labels: tuple[str, str], title: str, path: Path,
                  free_energy: bool) -> None:
    edges = dv.histogram_edges(np.concatenate([ref, gen]), DENSITY_BINS, margin=0.05)
    hists = [dv.histogram(v, edges) for v in (ref, gen)]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharex=True, sharey=True, constrained_layout=True)
    extent = (edges[0][0], edges[0][-1], edges[1][0], edges[1][-1])
    if free_energy:
        with np.errstate(divide="ignore"):
            surfaces = [-np.log(h) for h in hists]
        low = min(s[np.isfinite(s)].min() for s in surfaces)
        surfaces = [np.where(np.isfinite(s), s - low, np.nan) for s in surfaces]
        vmax = max(np.nanmax(s) for s in surfaces)
        kwargs, cbar_label = {"cmap": "viridis", "vmin": 0.0, "vmax": vmax}, "free energy (kT)"
    else:
        surfaces = [np.where(h > 0, h, np.nan) for h in hists]
        kwargs = {"cmap": "magma_r", "vmin": 0.0, "vmax": max(np.nanmax(s) for s in surfaces)}
        cbar_label = "probability per bin"
    for ax, surface, name, points in zip(axes, surfaces, ("reference MD", "generated"), (ref, gen),
                                         strict=True):
        image = ax.imshow(surface.T, origin="lower", extent=extent, aspect="auto", **kwargs)
        ax.set_title(f"{name} ({len(points)} frames)", fontsize=9)
        ax.set_xlabel(labels[0])
    axes[0].set_ylabel(labels[1])
    fig.colorbar(image, ax=axes, label=cbar_label, shrink=0.9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_pca(cmp: Comparison, path: Path) -> None:
    """PC1/PC2 densities of reference and sample, PCs fitted on the aligned reference CA coordinates."""
    m, f = cmp.metrics, cmp.floor
    _density_pair(cmp.data["pcs_reference"], cmp.data["pcs_sample"], ("PC1 (nm)", "PC2 (nm)"),
                  f"PCA of CA coordinates: JSD {m['pc_jsd']:.2f} (floor {f['pc_jsd']:.2f}), "
                  f"W2 {m['pc_w2_nm']:.3f} nm (floor {f['pc_w2_nm']:.3f})", path, free_energy=False)


def plot_tica(cmp: Comparison, path: Path) -> None:
    """Free-energy surfaces −ln p on TIC1/TIC2 (TICA fitted on the reference)."""
    m, f = cmp.metrics, cmp.floor
    _density_pair(cmp.data["tics_reference"], cmp.data["tics_sample"], ("TIC1", "TIC2"),
                  f"Free energy on TIC1/TIC2: JSD {m['tic_jsd']:.2f} (floor {f['tic_jsd']:.2f})",
                  path, free_energy=True)


def _phi_psi_pairs(angles: np.ndarray, labels: list[str]) -> np.ndarray:
    residues = [lab.split(":", 1)[1] for lab in labels]
    pairs = []
    for k, lab in enumerate(labels):
        if lab.startswith("phi:") and f"psi:{residues[k]}" in labels:
            pairs.append(np.column_stack([angles[:, k], angles[:, labels.index(f"psi:{residues[k]}")]]))
    return np.degrees(np.concatenate(pairs)) if pairs else np.zeros((0, 2))


def plot_ramachandran(cmp: Comparison, path: Path) -> None:
    """Ramachandran plots (all residues with both φ and ψ, pooled) of reference and sample."""
    d = cmp.data
    ref = _phi_psi_pairs(d["torsions_reference"], d["torsion_labels"])
    gen = _phi_psi_pairs(d["torsions_sample"], d["torsion_labels"])
    edges = [np.linspace(-180, 180, 73)] * 2
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0), sharey=True, constrained_layout=True)
    hists = [dv.histogram(v, edges) if len(v) else np.zeros((72, 72)) for v in (ref, gen)]
    vmax = max(float(h.max()) for h in hists) or 1.0
    for ax, h, name in zip(axes, hists, ("reference MD", "generated"), strict=True):
        image = ax.imshow(np.where(h > 0, h, np.nan).T, origin="lower", extent=(-180, 180, -180, 180),
                          cmap="magma_r", vmin=0, vmax=vmax, aspect="equal")
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
        ax.set_xlabel("φ (degrees)")
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("ψ (degrees)")
    fig.colorbar(image, ax=axes, label="probability per bin", shrink=0.9)
    fig.get_layout_engine().set(wspace=0.08)
    fig.suptitle(f"Backbone φ/ψ of residues with both angles, pooled: mean JSD {cmp.metrics['torsion_jsd']:.3f} "
                 f"(floor {cmp.floor['torsion_jsd']:.3f})", fontsize=10)
    _save(fig, path)


def plot_autocorrelation(cmp: Comparison, path: Path) -> None:
    """TIC1 autocorrelation and RMSD-vs-lag curves, reference, sample and MD-vs-MD floor."""
    d = cmp.data
    unit = "ps" if cmp.info["dynamics_dt_ps"] else "frames"
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.0, 3.6), constrained_layout=True)
    lags = d["acf_lags_ps"]
    a.plot(lags, d["acf_reference"], color=REF_COLOR, lw=2, label="reference MD")
    a.plot(lags, d["acf_sample"], color=GEN_COLOR, lw=2, label="generated")
    if len(d["acf_replicas"]) > 1:
        for k, replica_acf in enumerate(d["acf_replicas"]):
            a.plot(lags, replica_acf, color=REF_COLOR, lw=0.8, ls="--", alpha=0.7,
                   label="single reference replicas" if k == 0 else None)
    a.axhline(1 / np.e, color="0.6", lw=0.8, ls=":", label="1/e (decorrelation level)")
    a.set_xlabel(f"lag ({unit})")
    a.set_ylabel("TIC1 autocorrelation")
    a.set_title(f"TIC1 ACF: difference area {cmp.metrics['acf_area_ps']:.3g} {unit} "
                f"(floor {cmp.floor['acf_area_ps']:.3g})", fontsize=9)
    a.legend(fontsize=8)
    b.plot(d["rmsd_lags_ps"], d["rmsd_lag_reference"], "o-", color=REF_COLOR, label="reference MD")
    b.plot(d["rmsd_lags_ps"], d["rmsd_lag_sample"], "s-", color=GEN_COLOR, label="generated")
    b.set_xscale("log")
    b.set_xlabel(f"lag ({unit})")
    b.set_ylabel("mean CA RMSD (nm)")
    b.set_ylim(bottom=0)
    b.set_title(f"RMSD vs lag: mean |diff| {cmp.metrics['rmsd_lag_diff_nm']:.3f} nm "
                f"(floor {cmp.floor['rmsd_lag_diff_nm']:.3f})", fontsize=9)
    b.legend(fontsize=8)
    _save(fig, path)


def plot_validity(cmp: Comparison, path: Path) -> None:
    """Per-frame longest CA–CA bond and closest contacts over time, with fixed and reference limits."""
    from openmm_starmd.analysis.validity import CA_BOND_BREAK_NM, CA_CLASH_NM, HEAVY_CLASH_NM

    d, limits = cmp.data, cmp.data["validity_limits"]
    fig, axes = plt.subplots(3, 1, figsize=(9.0, 7.0), sharex=True, constrained_layout=True)
    panels = (("max_ca_bond_nm", "longest CA–CA bond (nm)", CA_BOND_BREAK_NM, limits.bond_limit_nm),
              ("min_ca_nonbonded_nm", "closest non-bonded CA–CA (nm)", CA_CLASH_NM, limits.ca_limit_nm),
              ("min_heavy_nonbonded_nm", "closest heavy-atom contact (nm)", HEAVY_CLASH_NM,
               limits.heavy_limit_nm))
    for ax, (field, label, fixed, rel) in zip(axes, panels, strict=True):
        for k, v in enumerate(d["validity_reference"]):
            t, _ = _time_axis(len(getattr(v, field)), cmp.info["reference_frame_ps"])
            ax.plot(t, getattr(v, field), color=REF_COLOR, lw=0.6, alpha=0.7,
                    label="reference MD" if k == 0 else None)
        for k, v in enumerate(d["validity_sample"]):
            t, xlabel = _time_axis(len(getattr(v, field)), cmp.info["sample_frame_ps"])
            ax.plot(t, getattr(v, field), color=GEN_COLOR, lw=0.6, alpha=0.8,
                    label="generated" if k == 0 else None)
        ax.axhline(fixed, color="black", ls="--", lw=1, label=f"fixed limit {fixed} nm")
        ax.axhline(rel, color=FLOOR_COLOR, ls=":", lw=1.2, label=f"reference 99th pct {rel:.3f} nm")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel(xlabel)
    m = cmp.metrics
    fig.suptitle(f"Validity per frame: breaks {m['break_rate']:.3f}, CA clashes {m['ca_clash_rate']:.3f}, "
                 f"heavy clashes {m['heavy_clash_rate']:.3f} of generated frames", fontsize=10)
    _save(fig, path)


def plot_drift(cmp: Comparison, path: Path) -> None:
    """Window metrics of the generated trajectory over time, against the MD-vs-MD floor."""
    names = (("pc_jsd", "PC1/PC2 JSD"), ("torsion_jsd", "φ/ψ JSD"), ("tic_jsd", "TIC1/TIC2 JSD"),
             ("rmsf_pearson_r", "RMSF r"), ("pc_recall", "PC1/PC2 recall"), ("invalid_rate", "invalid frames"))
    rows = cmp.windows
    unit = "ps" if cmp.info["dynamics_dt_ps"] else "frames"
    mid = np.array([(r["start_ps"] + r["end_ps"]) / 2 for r in rows])
    fig, axes = plt.subplots(2, 3, figsize=(10.0, 5.0), sharex=True, constrained_layout=True)
    for ax, (key, label) in zip(axes.ravel(), names, strict=True):
        ax.plot(mid, [r[key] for r in rows], "o-", color=GEN_COLOR, label="generated window")
        if np.isfinite(cmp.window_floor.get(key, np.nan)):
            ax.axhline(cmp.window_floor[key], color=FLOOR_COLOR, ls="--", label="MD vs MD, same window length")
        ax.set_title(label, fontsize=9)
        if key == "invalid_rate":
            ax.set_ylim(0, max(0.05, 1.1 * max(r[key] for r in rows)))
    for ax in axes[-1]:
        ax.set_xlabel(f"window centre ({unit})")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Drift over {len(rows)} successive windows of the generated trajectory, each against the "
                 "full reference", fontsize=10)
    _save(fig, path)


def plot_sidechains(cmp: Comparison, path: Path) -> None:
    """Per-residue χ1 JSD and χ1 rotamer transition rate: generated, MD-vs-MD floor and reference."""
    d = cmp.data
    residues = d["chi1_residues"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8.0, 0.7 * len(residues)), 3.4), constrained_layout=True)
    if not residues:
        for ax in (a, b):
            ax.text(0.5, 0.5, "no side chains in the matched atoms", ha="center", va="center")
            ax.set_axis_off()
        _save(fig, path)
        return
    x = np.arange(len(residues))
    w = 0.38
    a.bar(x - w / 2, d["side_chi1_jsd"], w, color=GEN_COLOR, label="generated")
    a.bar(x + w / 2, d["floor_side_chi1_jsd"], w, color=FLOOR_COLOR, label="MD vs MD floor")
    a.set_ylabel("χ1 JSD (bits)")
    a.set_title(f"χ1 JSD per residue: mean {cmp.metrics['chi1_jsd']:.3f} (floor {cmp.floor['chi1_jsd']:.3f})",
                fontsize=9)
    w = 0.27
    b.bar(x - w, d["side_rotamer_rate_per_ns"], w, color=GEN_COLOR, label="generated")
    b.bar(x, d["floor_side_rotamer_rate_per_ns"], w, color=FLOOR_COLOR, label="MD vs MD floor (held-out part)")
    b.bar(x + w, d["rotamer_rate_reference"], w, color=REF_COLOR, label="reference MD")
    b.set_ylabel("χ1 rotamer transitions per ns")
    b.set_title("χ1 rotamer-well changes (g+, g−, t) per residue per ns", fontsize=9)
    for ax in (a, b):
        ax.set_xticks(x, residues, rotation=45, fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)


def write_plots(cmp: Comparison, folder: Path) -> list[Path]:
    """Write every figure as ``folder/NAME.png``; returns the paths."""
    plotters = {"rmsf": plot_rmsf, "pca_density": plot_pca, "tica_fes": plot_tica,
                "ramachandran": plot_ramachandran, "autocorrelation": plot_autocorrelation,
                "validity": plot_validity, "drift": plot_drift, "sidechains": plot_sidechains}
    paths = []
    for name, fn in plotters.items():
        fn(cmp, folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths
