"""The ``starmd`` command line. All argparse code of the package lives here.

Each sub-command is a pair ``_add_NAME`` (its options) and ``_run_NAME`` (calls the library).
Library errors of type :class:`~openmm_starmd.errors.StarMDError` become a one-line
``starmd: error: ...`` and exit status 2; Ctrl-C exits with 130 and leaves resumable state.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from openmm_starmd import __version__
from openmm_starmd.errors import StarMDError

EXIT_USAGE = 2


# --------------------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="clean a PDB/mmCIF entry (or build a peptide) for simulation")
    p.add_argument("input", nargs="?", help="PDB or mmCIF file (omit with --sequence)")
    p.add_argument("--sequence", help="build a peptide from one-letter codes instead, e.g. AKWD")
    p.add_argument("-o", "--output", required=True, help="output PDB path")
    p.add_argument("--model", type=int, default=1, help="NMR model to take, 1-based (default 1)")
    p.add_argument("--chain", action="append", help="chain id to keep (repeatable; default all protein chains)")
    p.add_argument("--keep-water", action="store_true", help="keep crystal waters")
    p.add_argument("--ph", type=float, default=7.0, help="pH for protonation (default 7.0)")
    p.add_argument("--add-terminal-residues", action="store_true",
                   help="build missing terminal residues from SEQRES (default: leave them out)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> None:
    from openmm_starmd import prep

    if (args.input is None) == (args.sequence is None):
        raise StarMDError("give either an input file or --sequence, not both or neither")
    prepared = prep.prepare(
        args.input, sequence=args.sequence, model=args.model, chains=args.chain,
        keep_water=args.keep_water, ph=args.ph, add_terminal_residues=args.add_terminal_residues,
    )
    prep.write_pdb(prepared, args.output, overwrite=args.overwrite)
    for line in prepared.report:
        print(line)
    print(f"wrote {args.output}: {prepared.topology.getNumResidues()} residues, "
          f"{prepared.topology.getNumAtoms()} atoms")


# -------------------------------------------------------------------------------------------- md
def _add_md(sub: argparse._SubParsersAction) -> None:
    from openmm_starmd.forcefields import DEFAULT_PRESET, PRESETS

    p = sub.add_parser("md", help="plain OpenMM reference MD in the ATLAS layout (one system or a corpus)")
    p.add_argument("input", nargs="+",
                   help="prepared PDB (from `starmd prepare`); or, to build a corpus, several inputs: "
                        "structure files, folders of them, sequences (AKWD), bioemu:[NAME or glob] "
                        "(designed mini-proteins of bioemu-benchmarks), or a list file of these, one per line")
    p.add_argument("-o", "--output", required=True, help="output root; writes OUTPUT/NAME/")
    p.add_argument("--name", help="system name (default: input file stem; one input only)")
    p.add_argument("--shard", help="build shard I of N of a corpus, e.g. 2/8 (SLURM array: "
                                   "$((SLURM_ARRAY_TASK_ID + 1))/N); the shards together equal one process")
    p.add_argument("--time", default="10ns", help="saved time per replica, e.g. 500ps, 10ns (default 10ns)")
    p.add_argument("--stride", default="10ps", help="time between saved frames (default 10ps)")
    p.add_argument("--equilibration", default="200ps", help="equilibration before saving (default 200ps)")
    p.add_argument("--replicas", type=int, default=3, help="independent replicas (default 3)")
    p.add_argument("--forcefield", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="force-field preset")
    p.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    p.add_argument("--friction", type=float, default=1.0, help="friction in 1/ps (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (replica k uses seed + k; in a corpus each system hashes it with its name)")
    p.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint (a corpus always resumes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (one input only)")
    p.add_argument("--checkpoint-interval", type=float, default=60.0,
                   help="wall-clock seconds between checkpoints (default 60; 0: after every frame)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_md)


def _run_md(args: argparse.Namespace) -> None:
    from pathlib import Path

    from openmm_starmd import corpus, reference
    from openmm_starmd.units import parse_time

    if args.replicas < 1:
        raise StarMDError(f"--replicas must be at least 1, got {args.replicas}")
    equilibration = args.equilibration.strip()
    time_ps, stride_ps = parse_time(args.time, "--time"), parse_time(args.stride, "--stride")
    equilibration_ps = 0.0 if equilibration in ("0", "0ps", "0ns") else parse_time(equilibration, "--equilibration")
    single = (len(args.input) == 1 and args.shard is None
              and Path(args.input[0]).suffix.lower() in corpus.STRUCTURE_SUFFIXES)
    if not single:
        if args.name or args.overwrite:
            raise StarMDError(f"{'--name' if args.name else '--overwrite'} applies to one input file only: a "
                              "corpus names systems after their inputs and never replaces finished ones")
        shard = corpus.parse_shard(args.shard) if args.shard else (1, 1)
        settings = corpus.CorpusSettings(
            time_ps=time_ps, stride_ps=stride_ps, equilibration_ps=equilibration_ps, replicas=args.replicas,
            forcefield=args.forcefield, temperature_k=args.temperature, friction_per_ps=args.friction,
            seed=args.seed)
        entries = corpus.build_corpus(args.input, args.output, settings, shard=shard, platform=args.platform,
                                      checkpoint_interval_s=args.checkpoint_interval,
                                      show_progress=not args.no_progress)
        print(f"shard {shard[0]}/{shard[1]}: {len(entries)} systems finished in {args.output} "
              f"(manifest.shard-{shard[0]}-of-{shard[1]}.jsonl)")
        return
    folder = reference.run_reference_md(
        args.input[0], args.output, name=args.name, time_ps=time_ps, stride_ps=stride_ps,
        equilibration_ps=equilibration_ps, replicas=args.replicas, forcefield=args.forcefield,
        temperature_k=args.temperature, friction_per_ps=args.friction, seed=args.seed, platform=args.platform,
        resume=args.resume, overwrite=args.overwrite, checkpoint_interval_s=args.checkpoint_interval,
        show_progress=not args.no_progress,
    )
    print(f"wrote {folder}")


# ----------------------------------------------------------------------------------------- train
# (model issue: `starmd train DATA_DIR [DATA_DIR...] -o model_dir --preset small --steps N`)
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a STAR-MD model on reference trajectories (ATLAS layout, mdCATH)")
    p.add_argument("data", nargs="+",
                   help="system folders NAME/ (NAME.pdb + NAME_R*.xtc), mdCATH .h5 files, or folders of either")
    p.add_argument("-o", "--output", required=True, help="model folder to write")
    p.add_argument("--preset", choices=["tiny", "small", "base"],
                   help="model size (default small; with --init the checkpoint's)")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune: start from `default` (the shipped model) or a model folder; its config is "
                        "kept, the optimiser and learning-rate schedule start afresh")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step and rank (default 4)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    p.add_argument("--window", type=int, help="frames per training window K, also the history the model attends "
                   "to (default: the preset's, or with --init the checkpoint's)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="last fraction of each trajectory held out for validation (default 0.1)")
    p.add_argument("--val-systems", metavar="NAME[,NAME...]", default="",
                   help="systems held out of training entirely; their loss is reported as `unseen`")
    p.add_argument("--val-system-fraction", type=float, default=0.0,
                   help="fraction of the systems held out entirely, drawn from --seed (default 0)")
    p.add_argument("--val-every", type=int, default=200, help="steps between validation losses (default 200)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--temperature-condition", action="store_true",
                   help="condition the model on each trajectory's temperature (mdCATH: per group; our MD: "
                        "temperature_k in NAME_R*.json; otherwise 300 K)")
    p.add_argument("--chi-head", action="store_true",
                   help="train the side-chain torsion (χ1–χ4) head, also on top of an --init model without one")
    p.add_argument("--violation-weight", type=float, metavar="W",
                   help="weight of the penalty on stretched CA–CA links and backbone overlaps of predicted "
                        "structures (Å²; default: the preset's 0, or with --init the checkpoint's)")
    p.add_argument("--violation-neighbours", action="store_true",
                   help="also penalise overlaps of consecutive residues' backbone atoms four or more bonds "
                        "apart (a φ near 0 puts O(i) on C(i+1) and O(i+1))")
    p.add_argument("--dt-range", nargs=2, metavar=("LOW", "HIGH"),
                   help="train only on windows whose frames are Δt apart with LOW <= Δt <= HIGH, e.g. 100ps 1us "
                        "(HIGH is capped by each trajectory's length; default: every Δt the data hold)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default auto: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes building batches ahead, e.g. 8 on a GPU (default 0; same batches either way)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    import torch

    from openmm_starmd.train.run import train_from_folders
    from openmm_starmd.units import parse_time

    dt_range = None if args.dt_range is None else tuple(parse_time(v, "--dt-range") for v in args.dt_range)
    if args.threads is not None:
        if args.threads < 1:
            raise StarMDError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    summary = train_from_folders(
        args.data, args.output, preset_name=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup, window=args.window, val_fraction=args.val_fraction, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, seed=args.seed,
        device=None if args.device in (None, "auto") else args.device, resume=args.resume,
        overwrite=args.overwrite, workers=args.workers, init=args.init,
        temperature_condition=args.temperature_condition, chi_head=args.chi_head,
        violation_weight=args.violation_weight, violation_neighbours=args.violation_neighbours, dt_range_ps=dt_range,
        val_systems=[n.strip() for n in args.val_systems.split(",") if n.strip()],
        val_system_fraction=args.val_system_fraction,
    )
    if summary is not None:
        unseen = (f", unseen-system loss {summary['unseen_loss']:.4f} ({len(summary['held_out_systems'])} held out)"
                  if summary["unseen_loss"] is not None else "")
        print(f"wrote {args.output}: {summary['step']} steps, train loss {summary['train_loss']:.4f}, "
              f"val loss {summary['val_loss']}{unseen}, {summary['wall_s']:.0f} s")


# -------------------------------------------------------------------------------------- simulate
# (hybrid issue: `starmd simulate INPUT.pdb --time 1us --jump 1ns -o run_dir ...`)
def _add_simulate(sub: argparse._SubParsersAction) -> None:
    from openmm_starmd.forcefields import PRESETS

    p = sub.add_parser("simulate", help="hybrid STAR-MD jumps + OpenMM relaxation into a run folder")
    p.add_argument("input", help="PDB or mmCIF file (prepared on the fly; ignored with --resume)")
    p.add_argument("-o", "--output", required=True,
                   help="run folder (traj.xtc, topology.pdb, log.csv, run.json)")
    p.add_argument("--time", required=True, help="simulated time, e.g. 100ns, 1us")
    p.add_argument("--jump", default="1ns", help="simulated time per model jump (default 1ns)")
    p.add_argument("--model", default="default",
                   help="STAR-MD checkpoint folder, a proposer name (e.g. perturb), or default: the model "
                        "shipped with the package (default)")
    p.add_argument("--relax", default="3ps",
                   help="MD relaxation after each jump (default 3ps; 0ps: minimise only)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    p.add_argument("--forcefield", default="implicit-fast", choices=sorted(PRESETS),
                   help="force-field preset (default implicit-fast: the force field of the training MD; explicit: "
                        "the protein in a TIP3P water box with PME, the model moving the protein only)")
    p.add_argument("--protein-only", action="store_true",
                   help="explicit solvent: write the protein's atoms alone to traj.xtc (topology protein.pdb) "
                        "instead of the whole box")
    p.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    p.add_argument("--device", default="auto",
                   help="where the model runs: auto (a GPU when there is one), cpu, cuda or cuda:K (default auto)")
    p.add_argument("--replicas", type=int, default=1,
                   help="independent trajectories, seeds SEED..SEED+R-1, the model batched over them; R > 1 writes "
                        "traj_R{k}.xtc and log_R{k}.csv per replica (default 1)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (settings from run.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> None:
    from openmm_starmd.simulation.relax import RelaxSettings
    from openmm_starmd.simulation.run import run_simulation
    from openmm_starmd.units import parse_time

    relax_ps = 0.0 if args.relax.strip() in ("0", "0ps", "0ns") else parse_time(args.relax, "--relax")
    folder = run_simulation(
        args.input, args.output, time_ps=parse_time(args.time, "--time"),
        jump_ps=parse_time(args.jump, "--jump"), model=args.model, relax=RelaxSettings(time_ps=relax_ps),
        seed=args.seed, platform=args.platform, forcefield=args.forcefield, temperature_k=args.temperature,
        overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress, device=args.device,
        replicas=args.replicas, protein_only=args.protein_only,
    )
    print(f"wrote {folder}")


# -------------------------------------------------------------------------------------- validate
# (validation issue: `starmd validate GEN.xtc ... --ref REF.xtc ... --top TOP.pdb --out DIR`)
def _add_validate(sub: argparse._SubParsersAction) -> None:
    from openmm_starmd.forcefields import PRESETS

    p = sub.add_parser("validate",
                       help="compare generated trajectories with reference MD (metrics, report, plots)")
    p.add_argument("generated", nargs="+", help="generated trajectory file(s) (xtc, dcd, ...)")
    p.add_argument("--ref", nargs="+", required=True, help="reference MD replica trajectory file(s)")
    p.add_argument("--top", required=True, help="topology (PDB) of the reference trajectories")
    p.add_argument("--gen-top", help="topology of the generated trajectories if it differs from --top")
    p.add_argument("--out", required=True, help="output folder (metrics.json, report.md, PNG plots)")
    p.add_argument("--lag", default="100ps",
                   help="TICA/VAMP lag as a time (100ps) or frames (10); default 100ps")
    p.add_argument("--features", default="torsions", choices=["torsions", "distances"],
                   help="TICA/VAMP features: backbone torsions or CA distances (default torsions)")
    p.add_argument("--windows", type=int, default=5,
                   help="successive windows for the drift table (default 5)")
    p.add_argument("--forcefield", choices=sorted(PRESETS),
                   help="also compare potential energies recomputed from the saved frames of both sides with this "
                        "implicit-solvent preset (e.g. implicit-fast; needs all-atom trajectories)")
    p.add_argument("--run", help="run.json (or run folder) of the hybrid run that wrote the generated trajectory, for "
                                 "its rejection rate and raw validity (default: the run.json beside a single "
                                 "generated trajectory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_run_validate)


def _run_validate(args: argparse.Namespace) -> None:
    from openmm_starmd.analysis.report import validate

    if args.windows < 1:
        raise StarMDError(f"--windows must be at least 1, got {args.windows}")
    folder = validate(args.generated, args.ref, args.top, args.out, gen_top=args.gen_top, lag=args.lag,
                      features=args.features, windows=args.windows, overwrite=args.overwrite,
                      progress=sys.stderr.isatty(), forcefield=args.forcefield, run=args.run)
    print(f"wrote {folder}: metrics.json, report.md and plots")


# --------------------------------------------------------------------------------------- rollout
# (issue 15: `starmd rollout INPUT --time 1us --jump 1ns -o DIR`, STAR-MD alone, no OpenMM dynamics)
def _add_rollout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="model-only STAR-MD rollouts (no OpenMM dynamics) into a run folder")
    p.add_argument("input", nargs="?", help="PDB or mmCIF file (prepared on the fly; ignored with --resume)")
    p.add_argument("-o", "--output", required=True,
                   help="run folder (traj.xtc or traj_R{k}.xtc, topology.pdb, start.pdb, log.csv, run.json)")
    p.add_argument("--time", required=True, help="rollout length, e.g. 100ns, 1us")
    p.add_argument("--jump", default="1ns", help="simulated time per model jump (default 1ns)")
    p.add_argument("--replicas", type=int, default=1,
                   help="independent trajectories, batched through the model (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed; replica k = 0..R-1 uses seed + k (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:K")
    p.add_argument("--model", default="default",
                   help="STAR-MD checkpoint folder, or default: the model shipped with the package")
    p.add_argument("--atoms", default="backbone", choices=["backbone", "all"],
                   help="write N, CA, C, O (default) or all atoms (each residue moved with its frame, side "
                        "chains turned to the drawn χ with a χ-head model)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (settings from run.json; --time may extend it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's files")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_rollout)


def _run_rollout(args: argparse.Namespace) -> None:
    import json

    from openmm_starmd.generate import run_rollout
    from openmm_starmd.units import parse_time

    if args.input is None and not args.resume:
        raise StarMDError("give an input PDB/mmCIF file (or --resume to continue the run in -o)")
    folder = run_rollout(
        args.input, args.output, time_ps=parse_time(args.time, "--time"), jump_ps=parse_time(args.jump, "--jump"),
        replicas=args.replicas, seed=args.seed, device=args.device, model=args.model, atoms=args.atoms,
        overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress,
    )
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    raw, speed = record.get("raw_validity", {}), record["speed"]
    print(f"wrote {folder}: {raw.get('frames', 0)} frames, {100 * raw.get('valid_fraction', 0.0):.1f} % raw-valid, "
          f"{speed['wall_s_per_jump'] or 0.0:.3f} s per jump ({speed['ns_per_day_aggregate'] or 0.0:,.0f} ns/day)")


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    """The full ``starmd`` parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="starmd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"openmm_starmd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in [value for key, value in globals().items() if key.startswith("_add_")]:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``starmd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except StarMDError as exc:
        print(f"starmd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("starmd: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
