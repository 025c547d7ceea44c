"""Fine-tuning the shipped model on a few ns of one protein's MD, measured against an independent replica.

Given a reference MD folder ``NAME/`` with two replicas (``NAME_R1.xtc``, ``NAME_R2.xtc``; an unfinished
run's ``.NAME.work/R{k}/`` chunks are read too, copied first):

(a) a hybrid run with the default model (:func:`openmm_starmd.simulation.run.run_simulation`, the code
    of ``starmd simulate``; default relaxation and guards, ``--jump`` 1 ns) from the MD's start structure;
(b) ``starmd train --init default`` on R1 only, on the CPU;
(c) the same hybrid run (same seed and settings) with the fine-tuned model;
(d) both scored against R2, size-matched: the N generated frames vs R2's second half, next to an evenly
    thinned first half of R2 with the same N frames vs that same second half (the MD floor). N is the
    frame count of R2's first half, or the length of the shorter hybrid run if that is less.
    Metrics: φ/ψ JSD, PC1/PC2 JSD, CA RMSF Pearson r, CA RMSD to the start, raw model validity (every
    proposal mapped to atoms, before guards and relaxation), final validity, rejection rate; plus the
    held-out loss of both models on R2's windows (training objective, fixed windows and noise).

``--test-folder`` takes the test replica from another run's replica 1 (an independent replica run as its
own job). Stages (``--stage``) keep their results in ``--work``, so the default model's run can start
before the reference MD is finished. ``--test-from-r1 F`` is the fallback when no second replica exists:
R1's first ``1 - F`` is the training data and its last ``F`` the test data; that is not an independent
replica, and the results say so.

    python benchmarks/bench_finetune.py /work/md/ft/EHEE_rd3_0053 --top /work/md/EHEE_rd3_0053.pdb \
        --test-folder /work/md/ft_r2/EHEE_rd3_0053 --work /work/scratch/corpus/finetune
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

import openmm_starmd
from openmm_starmd.analysis.ensemble import compare_ensemble, fit_ensemble_reference
from openmm_starmd.analysis.matching import load_trajectory, match_atoms, matched_pair
from openmm_starmd.analysis.validity import frame_validity
from openmm_starmd.atomic import atomic_write, atomic_write_json
from openmm_starmd.data.dataset import TrajectoryWindows, collate_windows
from openmm_starmd.model.checkpoint import load_model
from openmm_starmd.simulation import guards
from openmm_starmd.simulation.run import run_simulation
from openmm_starmd.train.run import train_from_folders
from openmm_starmd.train.trainer import evaluate
from openmm_starmd.units import parse_time

SCORES = ("torsion_jsd", "pc_jsd", "rmsf_pearson_r")


def replica(folder: Path, k: int, scratch: Path) -> Path | None:
    """Replica ``k`` of ``folder`` as one XTC in ``scratch``: the finished file, or the chunks recorded so far
    by an unfinished run (``.NAME.work/R{k}/progress.json``), copied before they are read."""
    name = folder.name
    done = folder / f"{name}_R{k}.xtc"
    out = scratch / f"R{k}.xtc"
    if done.is_file():
        shutil.copy(done, out)
        return out
    progress = folder.parent / f".{name}.work" / f"R{k}" / "progress.json"
    if not progress.is_file():
        return None
    record = json.loads(progress.read_text())
    parts = []
    for chunk in record["chunks"]:
        shutil.copy(progress.parent / chunk, scratch / chunk)
        with md.formats.XTCTrajectoryFile(str(scratch / chunk)) as handle:
            xyz, times, steps, _ = handle.read()
        parts.append((xyz, times, steps))
        (scratch / chunk).unlink()
    if not parts:
        return None
    with md.formats.XTCTrajectoryFile(str(out), "w") as handle:
        handle.write(np.concatenate([p[0] for p in parts]), time=np.concatenate([p[1] for p in parts]),
                     step=np.concatenate([p[2] for p in parts]))
    return out


def atlas_folder(root: Path, name: str, top: Path, traj: md.Trajectory, stride_ps: float) -> Path:
    """Write ``root/NAME/{NAME.pdb, NAME_R1.xtc, NAME_R1.json}`` (the layout ``starmd train`` reads)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(top, folder / f"{name}.pdb")
    traj.save_xtc(str(folder / f"{name}_R1.xtc"))
    atomic_write_json(folder / f"{name}_R1.json", {"name": name, "stride_ps": stride_ps, "frames": traj.n_frames})
    return folder


class RawValidity:
    """Counts raw proposals and those valid before guards and relaxation, by wrapping the guard's checks:
    every proposal passes ``check_proposal``; those with finite proper rotations are mapped to atoms and
    passed to ``check_target``, where the mapped structure is scored with the validation thresholds."""

    def __init__(self) -> None:
        self.proposals = self.valid = 0
        self._proposal, self._target = guards.Guard.check_proposal, guards.Guard.check_target

    def __enter__(self) -> RawValidity:
        counter = self

        def check_proposal(guard, rotations, translations):
            counter.proposals += 1
            return counter._proposal(guard, rotations, translations)

        def check_target(guard, positions):
            frame = md.Trajectory(positions[None].astype(np.float32), guard.md_topology)
            counter.valid += bool(np.isfinite(positions).all() and frame_validity(frame).valid[0])
            return counter._target(guard, positions)

        guards.Guard.check_proposal, guards.Guard.check_target = check_proposal, check_target
        return self

    def __exit__(self, *exc: object) -> None:
        guards.Guard.check_proposal, guards.Guard.check_target = self._proposal, self._target


def hybrid(top: Path, out: Path, n_jumps: int, jump_ps: float, model: str, seed: int) -> dict:
    """One hybrid run (``starmd simulate``'s code) with raw-validity counting; returns its record."""
    with RawValidity() as raw:
        start = time.perf_counter()
        try:
            run_simulation(top, out, time_ps=n_jumps * jump_ps, jump_ps=jump_ps, model=model, seed=seed,
                           overwrite=True, progress=False)
        except KeyboardInterrupt:  # Ctrl-C (SIGINT) ends a run early; its frames so far are scored
            pass
        wall = time.perf_counter() - start
    record = json.loads((out / "run.json").read_text())
    rejected = sum(record["rejections"].values())
    return {"model": model, "jumps": record["jumps_done"], "status": record["status"], "wall_s": round(wall, 1),
            "rejections": record["rejections"], "halvings": record["halvings"],
            "raw_proposals": raw.proposals, "raw_valid_fraction": raw.valid / max(1, raw.proposals),
            "rejection_rate": rejected / max(1, raw.proposals)}


def ca_rmsd_to_start(traj: md.Trajectory, start: md.Trajectory) -> dict:
    ca = traj.topology.select("name CA")
    values = md.rmsd(traj[:], start[:], 0, atom_indices=ca)  # copies: mdtraj centres its inputs in place
    return {"mean_nm": float(values.mean()), "max_nm": float(values.max()), "last_nm": float(values[-1])}


def held_out_loss(models: dict[str, str], folder: Path, batches: int, batch_size: int, seed: int) -> dict:
    """Training-objective loss of each model on the same fixed windows of ``folder`` and the same noise."""
    loaded = {label: load_model(path) for label, path in models.items()}
    nets = {label: net for label, (net, _) in loaded.items()}
    window = next(iter(loaded.values()))[1].window
    data = TrajectoryWindows([folder], window=window, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    fixed = [collate_windows([data[int(torch.randint(len(data), (), generator=gen))] for _ in range(batch_size)])
             for _ in range(batches)]
    return {label: evaluate(net, fixed) for label, net in nets.items()}


def score(runs: dict[str, Path], test: md.Trajectory, start: md.Trajectory, n: int) -> dict:
    """Size-matched scores against the test replica's second half (see module docstring)."""
    first, second = test[: test.n_frames // 2], test[test.n_frames // 2:]
    reference = fit_ensemble_reference([second])
    thinned = first[np.linspace(0, first.n_frames - 1, n).round().astype(int)]
    out = {"md_floor": {**{k: compare_ensemble(reference, thinned, pairwise=False, w2=False)[k] for k in SCORES},
                        "ca_rmsd_to_start": ca_rmsd_to_start(test, start), "frames": n,
                        "final_valid_fraction": float(frame_validity(thinned).valid.mean())}}
    for label, run in runs.items():
        gen = load_trajectory(run / "traj.xtc", run / "topology.pdb")
        gen_idx, ref_idx = match_atoms(gen.topology, test.topology)
        if len(ref_idx) != test.n_atoms:
            raise SystemExit(f"{run}: the hybrid run's topology matches {len(ref_idx)} of {test.n_atoms} atoms")
        gen, _ = matched_pair(gen, test, gen_idx, ref_idx)
        scores = compare_ensemble(reference, gen[:n], pairwise=False, w2=False)
        out[label] = {**{k: scores[k] for k in SCORES}, "ca_rmsd_to_start": ca_rmsd_to_start(gen[:n], start),
                      "frames": min(n, gen.n_frames),
                      "final_valid_fraction": float(frame_validity(gen[:n]).valid.mean())}
    return out


def markdown(result: dict) -> str:
    s, h = result["scores"], result["hybrid"]
    rows = [("φ/ψ JSD (lower better)", "torsion_jsd", "{:.3f}"), ("PC1/PC2 JSD", "pc_jsd", "{:.3f}"),
            ("CA RMSF Pearson r (higher better)", "rmsf_pearson_r", "{:.3f}")]
    lines = [f"# Fine-tuning on one protein: {result['system']}", "", result["description"], "",
             "| metric | default model | fine-tuned | MD floor (R2 first half, thinned) |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(s['default'][key])} | {fmt.format(s['finetuned'][key])} | "
                     f"{fmt.format(s['md_floor'][key])} |")
    for part in ("mean_nm", "max_nm", "last_nm"):
        lines.append(f"| CA RMSD to start, {part[:-3]} (nm) | {s['default']['ca_rmsd_to_start'][part]:.3f} | "
                     f"{s['finetuned']['ca_rmsd_to_start'][part]:.3f} | {s['md_floor']['ca_rmsd_to_start'][part]:.3f} "
                     "(all of R2) |")
    lines += [f"| raw model validity (per proposal) | {h['default']['raw_valid_fraction']:.1%} | "
              f"{h['finetuned']['raw_valid_fraction']:.1%} | – |",
              f"| rejection rate (per proposal) | {h['default']['rejection_rate']:.1%} | "
              f"{h['finetuned']['rejection_rate']:.1%} | – |",
              f"| final validity (frames) | {s['default']['final_valid_fraction']:.1%} | "
              f"{s['finetuned']['final_valid_fraction']:.1%} | {s['md_floor']['final_valid_fraction']:.1%} |",
              f"| held-out loss on the test frames | {result['held_out_loss']['default']:.4f} | "
              f"{result['held_out_loss']['finetuned']:.4f} | – |",
              f"| hybrid wall time (s) / jumps | {h['default']['wall_s']:.0f} / {h['default']['jumps']} | "
              f"{h['finetuned']['wall_s']:.0f} / {h['finetuned']['jumps']} | – |", ""]
    return "\n".join(lines)


def load_test(args: argparse.Namespace, top: Path, data: Path) -> tuple[md.Trajectory, str]:
    """The test replica: ``--test-folder``'s replica 1, else the folder's replica 2, else R1's tail."""
    if args.test_from_r1 > 0:
        r1 = load_trajectory(replica(args.folder, 1, data), top)
        cut = round(r1.n_frames * (1 - args.test_from_r1))
        return r1[cut:], f"R1 frames {cut + 1}-{r1.n_frames}: NOT an independent replica"
    source = (args.test_folder, 1) if args.test_folder else (args.folder, 2)
    path = replica(source[0], source[1], data)
    if path is None:
        raise SystemExit(f"{source[0]} has no replica {source[1]} yet: wait, or pass --test-from-r1 0.5")
    return load_trajectory(path, top), f"{source[0]} replica {source[1]} (independent of R1)"


def finetune(args: argparse.Namespace, top: Path, data: Path, model_dir: Path) -> dict:
    """Fine-tune the default model on (the first ``--max-train-frames`` frames of) R1."""
    name = args.folder.name
    r1 = load_trajectory(replica(args.folder, 1, data), top)
    if args.test_from_r1 > 0:
        r1 = r1[: round(r1.n_frames * (1 - args.test_from_r1))]
    r1 = r1[: args.max_train_frames]
    stride_ps = float(np.median(np.diff(r1.time)))
    train_folder = atlas_folder(data / "train", name, top, r1, stride_ps)
    start = time.perf_counter()
    summary = train_from_folders([train_folder], model_dir, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 warmup_steps=args.warmup, val_fraction=0.0, val_every=args.steps,
                                 checkpoint_every=args.steps, seed=args.seed, device="cpu", overwrite=True,
                                 progress=False, init="default")
    window = load_model(model_dir)[1].window
    return {"train_frames": r1.n_frames, "stride_ps": stride_ps, "train_ns": r1.n_frames * stride_ps / 1000,
            "train_max_dt_ps": (r1.n_frames - 1) // (window - 1) * stride_ps,
            "command": f"starmd train {train_folder.parent} -o {model_dir} --init default --steps {args.steps} "
                       f"--batch-size {args.batch_size} --lr {args.lr} --warmup {args.warmup} --val-fraction 0 "
                       f"--seed {args.seed} --device cpu --threads 1",
            "wall_s": round(time.perf_counter() - start, 1), "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="reference MD folder NAME/ (finished or still running)")
    parser.add_argument("--top", type=Path, help="topology/start PDB (default NAME/NAME.pdb)")
    parser.add_argument("--test-folder", type=Path, help="test replica: replica 1 of this folder (default: R2)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data copies, models, runs)")
    parser.add_argument("--stage", default="all", choices=["all", "default-run", "finetune", "finetuned-run", "score"],
                        help="run one stage (its results are kept in --work for the later ones)")
    parser.add_argument("--jump", default="1ns")
    parser.add_argument("--jumps", type=int, default=150, help="length of each hybrid run in jumps (default 150)")
    parser.add_argument("--max-train-frames", type=int, default=10**9, help="use only R1's first frames")
    parser.add_argument("--test-from-r1", type=float, default=0.0,
                        help="no second replica: test on this last fraction of R1, train on the rest (not independent)")
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps (default 400)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loss-batches", type=int, default=8)
    parser.add_argument("--json", default="benchmarks/results/finetune.json")
    parser.add_argument("--md", default="benchmarks/results/finetune.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    name = args.folder.name
    top = args.top or args.folder / f"{name}.pdb"
    jump_ps = parse_time(args.jump, "--jump")
    runs = {"default": args.work / "hybrid_default", "finetuned": args.work / "hybrid_finetuned"}
    model_dir = args.work / "model_finetuned"
    data = args.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "default-run"):
        record = hybrid(top, runs["default"], args.jumps, jump_ps, "default", args.seed)
        atomic_write_json(args.work / "hybrid_default.json", record)
        print("default:", record, flush=True)
    if args.stage in ("all", "finetune"):
        record = finetune(args, top, data, model_dir)
        atomic_write_json(args.work / "finetune.json", record)
        print("fine-tuned:", record, flush=True)
    if args.stage in ("all", "finetuned-run"):
        record = hybrid(top, runs["finetuned"], args.jumps, jump_ps, str(model_dir), args.seed)
        atomic_write_json(args.work / "hybrid_finetuned.json", record)
        print("fine-tuned run:", record, flush=True)
    if args.stage not in ("all", "score"):
        return

    hybrid_records = {label: json.loads((args.work / f"hybrid_{label}.json").read_text()) for label in runs}
    ft = json.loads((args.work / "finetune.json").read_text())
    test, test_source = load_test(args, top, data)
    test_folder = atlas_folder(data / "test", name, top, test, ft["stride_ps"])
    n = min(test.n_frames // 2, *(record["jumps"] for record in hybrid_records.values()))
    default_folder = str(Path(openmm_starmd.__file__).parent / "weights")
    result = {
        "system": name, "train": f"{args.folder} R1, first {ft['train_frames']} frames ({ft['train_ns']:g} ns)",
        "test": f"{test_source}, {test.n_frames} frames ({test.n_frames * ft['stride_ps'] / 1000:g} ns)",
        "stride_ps": ft["stride_ps"], "frames_matched": n, "jump_ps": jump_ps, "finetune": ft,
        "hybrid": hybrid_records,
        "scores": score(runs, test, load_trajectory(top, top), n),
        "held_out_loss": held_out_loss({"default": default_folder, "finetuned": str(model_dir)}, test_folder,
                                       args.loss_batches, args.batch_size, args.seed),
        "machine": f"{os.cpu_count()}-core CPU, 1 torch thread, shared with other jobs; load average at scoring "
                   f"{os.getloadavg()[1]:.1f} (5 min), so wall times are not speed figures",
    }
    result["description"] = (
        f"Training data: {result['train']}; test replica: {result['test']}; {ft['stride_ps']:g} ps frames. "
        f"Hybrid runs: `starmd simulate` code, {args.jump} jumps, seed {args.seed}, default relaxation and guards "
        f"(default run {hybrid_records['default']['jumps']} jumps, fine-tuned run "
        f"{hybrid_records['finetuned']['jumps']}). Fine-tuning: `{ft['command']}` ({ft['wall_s']:.0f} s; its "
        f"windows span Δt up to {ft['train_max_dt_ps']:g} ps, shorter than the {args.jump} jump). "
        f"Scores: the first N = {n} frames of each run vs the test replica's second half; the MD floor is the "
        "test replica's first half thinned evenly to N frames vs the same second half. "
        f"Held-out loss: {args.loss_batches} fixed batches of {args.batch_size} windows of the test replica, "
        "fixed noise (training objective, lower is better).")
    text = markdown(result)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, result)
    with atomic_write(args.md) as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
