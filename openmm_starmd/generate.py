"""Model-only rollouts (``starmd rollout``): STAR-MD alone, no OpenMM dynamics — the paper's own mode.

The input is prepared as ``starmd simulate`` prepares it; its residue frames start R independent
rollouts (replica k, k = 0..R−1, seeded ``seed + k``) batched through one :class:`Rollout`. Each jump's
draw is pushed back as the next history frame and turned into atoms by moving every residue rigidly
with its frame (:class:`~openmm_starmd.simulation.reconstruct.AtomMap`, as the hybrid simulator does);
with ``atoms="all"`` and a model with a χ head, side chains are then turned to the drawn χ1–χ4
(:class:`~openmm_starmd.simulation.sidechains.SideChains`).

Run folder:

* ``start.pdb``: the prepared input (all atoms); ``topology.pdb``: the atoms of the trajectories
  (N, CA, C, O of every residue with ``atoms="backbone"``, all atoms with ``"all"``);
* ``traj.xtc`` (one replica) or ``traj_R{k}.xtc`` (replica k of an ensemble; the names of ``starmd simulate``):
  one frame per jump at ``j × jump`` ps (the start structure is not repeated);
* ``log.csv``: one row per jump and replica with the raw validity of the frame
  (:func:`~openmm_starmd.analysis.validity.frame_validity`, the criteria of ``starmd validate``) and the
  model time of the jump (shared by the replicas of one batched jump);
* ``state.safetensors``: rollout history and generator states after the last saved jump; ``run.json``:
  settings, versions, status, speed and the raw-validity summary.

Frames are kept in memory and saved in blocks (every ``save_every_s`` seconds of wall time and at the
end); the state is written after the frames, so an interrupted run resumes from the last block with
``resume=True``: trajectories and log are cut back to the saved jump count and every draw after it is
made again from the saved generator states, exactly.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import mdtraj as md
import numpy as np
import torch
from tqdm import tqdm

from openmm_starmd.atomic import atomic_write, atomic_write_json, check_output_dir, temporary_path
from openmm_starmd.errors import StarMDError
from openmm_starmd.model.checkpoint import model_folder, resolve_device
from openmm_starmd.runfolder import software_versions, truncate_xtc
from openmm_starmd.units import format_time, ns_per_day

ATOMS = ("backbone", "all")
FILES = ("start.pdb", "topology.pdb", "log.csv", "state.safetensors", "run.json")
LOG_FIELDS = ("jump", "replica", "time_ps", "valid", "ca_breaks", "ca_clashes", "heavy_clashes",
              "max_ca_bond_nm", "min_ca_nonbonded_nm", "min_heavy_nonbonded_nm", "model_s")


def trajectory_paths(out: Path, replicas: int) -> list[Path]:
    """``traj.xtc`` for one replica, ``traj_R{k}.xtc`` (k = 0..R−1) for an ensemble."""
    return [out / "traj.xtc"] if replicas == 1 else [out / f"traj_R{k}.xtc" for k in range(replicas)]


def _append_xtc(path: Path, xyz: np.ndarray, times: np.ndarray, steps: np.ndarray) -> None:
    """Append frames ``[T, A, 3]`` nm to an XTC file: XTC frames are self-contained records, so the block
    is written to a file of its own and its bytes are appended."""
    tmp = temporary_path(path)
    try:
        with md.formats.XTCTrajectoryFile(str(tmp), "w") as handle:
            handle.write(xyz, time=times.astype(np.float32), step=steps)
        with path.open("ab") as handle:
            handle.write(tmp.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        tmp.unlink(missing_ok=True)


class _Trajectories:
    """Start structure, atom mapping and writers of one run folder."""

    def __init__(self, out: Path, start_pdb: Path, atoms: str, replicas: int, chi_draws: int | None) -> None:
        import openmm.unit as unit

        from openmm_starmd import prep
        from openmm_starmd.simulation.reconstruct import AtomMap
        from openmm_starmd.simulation.sidechains import SideChains

        start = prep.load_pdb(start_pdb)
        self.topology = start.topology
        self.positions = np.asarray(start.positions.value_in_unit(unit.nanometer), dtype=np.float64)
        self.atom_map = AtomMap(self.topology)
        self.start_frames = self.atom_map.frames(self.positions)
        # chi_draws: the model's M χ draws (None: no χ head; side chains move rigidly)
        self.side_chains = SideChains(self.topology) if chi_draws is not None and atoms == "all" else None
        self.chi_draws = chi_draws
        bb = self.atom_map.backbone
        self.keep = (np.sort(bb[bb >= 0]) if atoms == "backbone" else np.arange(len(self.positions)))
        full = md.Trajectory(self.positions[None].astype(np.float32), md.Topology.from_openmm(self.topology))
        self.frame0 = full.atom_slice(self.keep)
        self.md_topology = self.frame0.topology
        self.paths = trajectory_paths(out, replicas)
        self.out = out

    def atoms_of(self, rot: torch.Tensor, trans: torch.Tensor, chi: torch.Tensor | None = None) -> np.ndarray:
        """Positions ``[A, 3]`` nm of the written atoms for residue frames ``[N, 3, 3]``, ``[N, 3]`` nm and
        side-chain torsions ``[N, 4]`` rad (None: side chains move rigidly)."""
        moved = self.atom_map.move_atoms(self.positions, self.start_frames, (rot, trans))
        if self.side_chains is not None:
            moved = self.side_chains.place(moved, chi, draws=self.chi_draws)
        return moved[self.keep]

    def save(self, first_jump: int, jump_ps: float, frames: list[list[np.ndarray]], model_s: list[float]) -> list[dict]:
        """Append jumps ``first_jump, first_jump + 1, ...`` (``frames[k]`` of replica k, ``[A, 3]`` each) to the
        trajectories and the log; returns the log rows."""
        from openmm_starmd.analysis.validity import frame_validity

        rows = []
        n = len(model_s)
        times = (first_jump + np.arange(n)) * jump_ps
        per_replica = []
        for k, path in enumerate(self.paths):
            xyz = np.stack(frames[k]).astype(np.float32)
            _append_xtc(path, xyz, times, first_jump + np.arange(n))
            per_replica.append(frame_validity(md.Trajectory(xyz, self.md_topology)))
        for i in range(n):
            for k, v in enumerate(per_replica):
                rows.append({"jump": first_jump + i, "replica": k, "time_ps": f"{times[i]:.6g}",
                             "valid": int(v.valid[i]), "ca_breaks": int(v.ca_breaks[i]),
                             "ca_clashes": int(v.ca_clashes[i]), "heavy_clashes": int(v.heavy_clashes[i]),
                             "max_ca_bond_nm": f"{v.max_ca_bond_nm[i]:.4f}",
                             "min_ca_nonbonded_nm": f"{v.min_ca_nonbonded_nm[i]:.4f}",
                             "min_heavy_nonbonded_nm": f"{v.min_heavy_nonbonded_nm[i]:.4f}",
                             "model_s": f"{model_s[i]:.4f}"})
        log = self.out / "log.csv"
        new = not log.exists()
        with log.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        return rows

    def cut_back(self, jumps: int, replicas: int) -> None:
        """Cut trajectories and log back to ``jumps`` saved jumps (after an interruption)."""
        for path in self.paths:
            truncate_xtc(path, jumps)
        log = self.out / "log.csv"
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True) if log.exists() else []
        if jumps == 0:
            log.unlink(missing_ok=True)
            return
        if len(lines) < 1 + jumps * replicas:
            raise StarMDError(f"{log} holds fewer rows than the saved state's {jumps} jumps: the run folder is "
                              "damaged, start again with --overwrite")
        with atomic_write(log) as handle:
            handle.writelines(lines[:1 + jumps * replicas])


def _summary(log: Path, replicas: int) -> dict[str, Any]:
    """Raw validity from log.csv: share of valid frames per replica and overall, and the first/last tenth."""
    with log.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    valid = np.array([int(r["valid"]) for r in rows], dtype=float).reshape(-1, replicas)
    tenth = max(len(valid) // 10, 1)
    return {"frames": int(valid.size), "valid_fraction": float(valid.mean()),
            "valid_fraction_per_replica": [float(x) for x in valid.mean(0)],
            "valid_fraction_first_tenth": float(valid[:tenth].mean()),
            "valid_fraction_last_tenth": float(valid[-tenth:].mean())}


def run_rollout(
    input_path: str | os.PathLike | None,
    output: str | os.PathLike,
    time_ps: float,
    jump_ps: float = 1000.0,
    replicas: int = 1,
    seed: int = 0,
    device: str | torch.device = "auto",
    model: str | os.PathLike = "default",
    atoms: str = "backbone",
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    save_every_s: float = 30.0,
) -> Path:
    """Run (or resume) a model-only rollout into the run folder ``output``; see the module docstring.

    Parameters
    ----------
    input_path
        PDB/mmCIF file, prepared with :func:`openmm_starmd.prep.prepare` (ignored on resume).
    time_ps, jump_ps
        Rollout length and time per jump, ps (``time_ps`` rounded to whole jumps).
    replicas, seed
        Independent trajectories and the seed of the first (replica k = 0..R−1 uses ``seed + k``).
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:k``: where the model runs.
    model
        ``"default"`` (the shipped model) or a STAR-MD checkpoint folder.
    atoms
        ``"backbone"`` (N, CA, C, O) or ``"all"`` (every atom, moved rigidly with its residue; side chains
        turned to the drawn χ when the model has a χ head).
    overwrite, resume
        Replace an existing run folder; continue the run in ``output`` (``time_ps`` may extend it).
    progress
        Show a tqdm bar.
    save_every_s
        Wall-clock seconds between saves (0: after every jump).

    Returns
    -------
    Path
        The run folder.
    """
    from openmm_starmd import prep
    from openmm_starmd.data.featurize import featurize_topology
    from openmm_starmd.model.checkpoint import load_model, load_tensors, save_tensors
    from openmm_starmd.rollout import Rollout

    out = Path(output)
    # ---- every argument is checked before anything is written
    if resume:
        if not (out / "run.json").is_file() or not (out / "state.safetensors").is_file():
            raise StarMDError(f"{out} holds no rollout to resume (no run.json/state.safetensors): run without --resume")
        settings = json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]
        jump_ps, replicas, seed = settings["jump_ps"], settings["replicas"], settings["seed"]
        model, atoms, input_path = settings["model"], settings["atoms"], settings["input"]
    else:
        check_output_dir(out, overwrite)
        if input_path is None or not Path(input_path).is_file():
            raise StarMDError(f"input file {input_path} not found: give a PDB or mmCIF file")
    if not (jump_ps > 0 and np.isfinite(jump_ps)):
        raise StarMDError(f"--jump must be a positive time, got {jump_ps} ps")
    total = round(time_ps / jump_ps)
    if total < 1:
        raise StarMDError(f"--time {format_time(time_ps)} is shorter than one {format_time(jump_ps)} jump: "
                          "give a longer time or a shorter jump")
    if int(replicas) < 1:
        raise StarMDError(f"--replicas must be at least 1, got {replicas}")
    if int(seed) < 0:
        raise StarMDError(f"--seed must be a non-negative integer, got {seed}")
    if atoms not in ATOMS:
        raise StarMDError(f"--atoms must be one of {', '.join(ATOMS)}, got {atoms!r}")
    if save_every_s < 0:
        raise StarMDError(f"save_every_s must be >= 0, got {save_every_s}")
    replicas, seed = int(replicas), int(seed)
    dev = resolve_device(device)
    folder = model_folder(model).resolve()
    net, _config = load_model(folder, dev)
    if not resume:
        prepared = prep.prepare(input_path)
        out.mkdir(parents=True, exist_ok=True)
        for path in (*(out / name for name in FILES), *trajectory_paths(out, replicas)):
            path.unlink(missing_ok=True)
        prep.write_pdb(prepared, out / "start.pdb", overwrite=True)
    # ---- set up from the written start structure, so a resumed run is the same run
    trajs = _Trajectories(out, out / "start.pdb", atoms, replicas,
                          net.config.chi_draws if net.config.chi_head else None)
    if not resume:
        trajs.frame0.save_pdb(str(out / "topology.pdb"))
    rollout = Rollout(net, featurize_topology(trajs.topology), replicas=replicas)
    gens = [torch.Generator(device=dev).manual_seed(seed + k) for k in range(replicas)]
    done = 0
    if resume:
        state = load_tensors(out / "state.safetensors")
        done = int(state.pop("jumps_done"))
        for k, g in enumerate(gens):
            g.set_state(state.pop(f"generator_{k}"))
        rollout.load_state_dict(state)
        trajs.cut_back(done, replicas)
    else:
        rot0, trans0 = (x.float().to(dev) for x in trajs.start_frames)
        rollout.push(rot0.expand(replicas, -1, -1, -1), trans0.expand(replicas, -1, -1))
    settings = {"input": str(Path(input_path).resolve()), "time_ps": total * jump_ps, "jump_ps": jump_ps,
                "replicas": replicas, "seed": seed, "device": str(dev), "model": str(folder), "atoms": atoms,
                "window": rollout.window, "num_sampler_steps": net.config.num_sampler_steps,
                "model_max_step_ps": rollout.max_step_ps, "model_chi_draws": net.config.chi_draw_setting(),
                "side_chains": ("not written" if atoms == "backbone" else
                                "rigid" if trajs.side_chains is None else "chi head"),
                "raw": "model draws only: no OpenMM relaxation, no guards, no re-draws"}
    record: dict[str, Any] = {"settings": settings, "versions": software_versions(),
                              "torch_threads": torch.get_num_threads(), "status": "running",
                              "jumps_done": done, "jumps_total": total}
    atomic_write_json(out / "run.json", record)

    def save(state_jumps: int) -> None:
        blob = {**rollout.state_dict(), "jumps_done": torch.tensor(state_jumps, device="cpu")}
        blob.update({f"generator_{k}": g.get_state() for k, g in enumerate(gens)})
        save_tensors(out / "state.safetensors", blob)

    bar = tqdm(total=total, initial=done, unit="jump", dynamic_ncols=True, disable=not progress)
    frames: list[list[np.ndarray]] = [[] for _ in range(replicas)]
    model_times: list[float] = []
    saved, valid_seen, frames_seen = done, 0, 0
    wall = time.perf_counter()
    last_save, model_total, status = wall, 0.0, "interrupted"
    try:
        for _ in range(done, total):
            t0 = time.perf_counter()
            rot, trans = rollout.sample(jump_ps, gens)
            chi = rollout.last_chi
            rollout.push(rot, trans)
            rot, trans = rot.to("cpu"), trans.to("cpu")  # waits for the device: the jump is complete
            model_times.append(time.perf_counter() - t0)
            for k in range(replicas):
                frames[k].append(trajs.atoms_of(rot[k], trans[k], None if chi is None else chi[k]))
            now = time.perf_counter()
            if now - last_save >= save_every_s or saved + len(model_times) == total:
                rows = trajs.save(saved + 1, jump_ps, frames, model_times)
                saved += len(model_times)
                save(saved)
                model_total += sum(model_times)
                valid_seen += sum(r["valid"] for r in rows)
                frames_seen += len(rows)
                frames, model_times, last_save = [[] for _ in range(replicas)], [], now
                bar.set_postfix_str(f"{ns_per_day(replicas * (saved - done) * jump_ps, now - wall):,.0f} ns/day, "
                                    f"{100 * valid_seen / frames_seen:.1f} % raw valid")
            bar.update(1)
        status = "complete"
    finally:
        bar.close()
        wall = time.perf_counter() - wall
        jumps = saved - done
        record.update(status=status, jumps_done=saved, raw_validity=_summary(out / "log.csv", replicas)
                      if (out / "log.csv").exists() else {},
                      speed={"session_wall_s": wall, "session_jumps": jumps,
                             "model_s_per_jump": model_total / jumps if jumps else None,
                             "wall_s_per_jump": wall / jumps if jumps else None,
                             "ns_per_day_aggregate": ns_per_day(replicas * jumps * jump_ps, wall) if jumps else None,
                             "ns_per_day_per_replica": ns_per_day(jumps * jump_ps, wall) if jumps else None})
        atomic_write_json(out / "run.json", record)
    return out
