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

    p = sub.add_parser("md", help="plain OpenMM reference MD in the ATLAS layout")
    p.add_argument("input", help="prepared PDB (from `starmd prepare`)")
    p.add_argument("-o", "--output", required=True, help="output root; writes OUTPUT/NAME/")
    p.add_argument("--name", help="system name (default: input file stem)")
    p.add_argument("--time", default="10ns", help="simulated time per replica, e.g. 500ps, 10ns (default 10ns)")
    p.add_argument("--stride", default="10ps", help="time between saved frames (default 10ps)")
    p.add_argument("--equilibration", default="200ps", help="equilibration before saving (default 200ps)")
    p.add_argument("--replicas", type=int, default=3, help="independent replicas (default 3)")
    p.add_argument("--forcefield", default=DEFAULT_PRESET, choices=sorted(PRESETS), help="force-field preset")
    p.add_argument("--temperature", type=float, default=300.0, help="temperature in K (default 300)")
    p.add_argument("--friction", type=float, default=1.0, help="friction in 1/ps (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (replica k uses seed + k)")
    p.add_argument("--platform", help="OpenMM platform (default: fastest available)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_run_md)


def _run_md(args: argparse.Namespace) -> None:
    from openmm_starmd import reference
    from openmm_starmd.units import parse_time

    if args.replicas < 1:
        raise StarMDError(f"--replicas must be at least 1, got {args.replicas}")
    folder = reference.run_reference_md(
        args.input, args.output, name=args.name,
        time_ps=parse_time(args.time, "--time"), stride_ps=parse_time(args.stride, "--stride"),
        equilibration_ps=0.0 if args.equilibration in ("0", "0ps") else parse_time(args.equilibration,
                                                                                   "--equilibration"),
        replicas=args.replicas, forcefield=args.forcefield, temperature_k=args.temperature,
        friction_per_ps=args.friction, seed=args.seed, platform=args.platform,
        resume=args.resume, overwrite=args.overwrite,
    )
    print(f"wrote {folder}")


# ----------------------------------------------------------------------------------------- train
# (model issue: `starmd train DATA_DIR [DATA_DIR...] -o model_dir --preset small --steps N`)


# -------------------------------------------------------------------------------------- simulate
# (hybrid issue: `starmd simulate INPUT.pdb --time 1us --jump 1ns -o run_dir ...`)


# -------------------------------------------------------------------------------------- validate
# (validation issue: `starmd validate GEN.xtc ... --ref REF.xtc ... --top TOP.pdb --out DIR`)


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
