"""Structure preparation: from a deposited PDB/mmCIF entry, or a sequence, to a simulation-ready protein.

Real entries are messy: several NMR models, alternate locations, crystal waters and ligands, several
chains, missing atoms and hydrogens, modified residues. :func:`prepare` handles each of these with
PDBFixer, tells the user what it did (``PreparedStructure.report``), and refuses what it cannot fix
with a one-line :class:`~openmm_starmd.errors.StarMDError`.

PDBFixer looks up unknown residue names on the RCSB web site; preparation must work offline and be
reproducible, so that look-up is disabled here (:class:`_OfflineFixer`).
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as u
from pdbfixer import PDBFixer
from pdbfixer.pdbfixer import proteinResidues, substitutions

from openmm_starmd.atomic import atomic_write
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import openmm_seed

# One-letter codes of the 20 standard amino acids, for --sequence.
ONE_TO_THREE = {
    "A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY",
    "H": "HIS", "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER",
    "T": "THR", "W": "TRP", "Y": "TYR", "V": "VAL",
}
WATER_NAMES = frozenset({"HOH", "WAT", "H2O", "TIP3", "SOL"})
_BACKBONE = frozenset({"N", "CA", "C"})


@dataclass
class PreparedStructure:
    """A cleaned protein ready for :func:`openmm_starmd.forcefields.build_system`.

    Attributes
    ----------
    topology
        All-atom topology with hydrogens, no periodic box (implicit-solvent default).
    positions
        Atom positions, shape [n_atoms, 3], nm (an OpenMM ``Quantity``).
    report
        One line per change made (models dropped, ligands removed, residues replaced, ...).
    """

    topology: app.Topology
    positions: u.Quantity
    report: list[str] = field(default_factory=list)


class _OfflineFixer(PDBFixer):
    """PDBFixer that never reaches the network: unknown residue definitions are simply not found."""

    def _downloadCCDDefinition(self, residueName: str) -> None:
        return None


def _is_amino_acid_like(residue: app.topology.Residue) -> bool:
    names = {atom.name for atom in residue.atoms()}
    return residue.name in proteinResidues or residue.name in substitutions or _BACKBONE <= names


def _load_fixer(path: Path) -> tuple[_OfflineFixer, list[str]]:
    """Read a PDB or mmCIF file into an offline PDBFixer, with one-line errors for unreadable input."""
    if not path.exists():
        raise StarMDError(f"input file {path} does not exist: check the path")
    if path.is_dir():
        raise StarMDError(f"input {path} is a folder: give a PDB or mmCIF file")
    if path.stat().st_size == 0:
        raise StarMDError(f"input file {path} is empty: give a PDB or mmCIF file")
    suffix = path.suffix.lower()
    try:
        with open(path) as handle:
            if suffix in (".cif", ".mmcif", ".pdbx"):
                fixer = _OfflineFixer(pdbxfile=handle)
            else:
                fixer = _OfflineFixer(pdbfile=handle)
    except UnicodeDecodeError:
        raise StarMDError(f"{path} is not a text structure file: give a PDB or mmCIF file") from None
    except Exception as exc:  # PDBFixer/OpenMM raise bare Exception for unreadable content
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StarMDError(f"cannot read {path} as a PDB/mmCIF structure ({reason}): check the file") from None
    return fixer, []


def _select_model(fixer: _OfflineFixer, path: Path, model: int) -> list[str]:
    """Use NMR model ``model`` (1-based) for the positions; report how many models there were."""
    if model < 1:
        raise StarMDError(f"--model must be 1 or more, got {model}")
    with open(path) as handle:
        reader = app.PDBxFile(handle) if path.suffix.lower() in (".cif", ".mmcif", ".pdbx") else app.PDBFile(handle)
    n_models = reader.getNumFrames()
    if model > n_models:
        raise StarMDError(f"{path} has {n_models} model(s), --model {model} does not exist: choose 1-{n_models}")
    if model > 1:
        fixer.positions = reader.getPositions(frame=model - 1)
    return [f"took model {model} of {n_models}"] if n_models > 1 else []


def _select_chains(fixer: _OfflineFixer, chains: list[str] | None) -> list[str]:
    """Keep the requested chains, or by default every chain that holds protein."""
    all_chains = list(fixer.topology.chains())
    protein_ids = [c.id for c in all_chains if any(_is_amino_acid_like(r) for r in c.residues())]
    if not protein_ids:
        raise StarMDError("the structure contains no protein residues: give a protein structure")
    if chains:
        known = sorted({c.id for c in all_chains})
        unknown = [c for c in chains if c not in known]
        if unknown:
            raise StarMDError(f"unknown chain {', '.join(unknown)}: this structure has chains {', '.join(known)}")
        no_protein = [c for c in chains if c not in protein_ids]
        if no_protein:
            raise StarMDError(f"chain {', '.join(no_protein)} holds no protein: choose from {', '.join(protein_ids)}")
        keep = set(chains)
    else:
        keep = set(protein_ids)
    drop = [i for i, c in enumerate(all_chains) if c.id not in keep]
    if not drop:
        return []
    dropped = sorted({all_chains[i].id for i in drop})
    fixer.removeChains(chainIndices=drop)
    return [f"removed chain(s) {', '.join(dropped)}"]


def _remove_heterogens(fixer: _OfflineFixer, keep_water: bool) -> list[str]:
    """Remove ligands (reported by name) and, unless asked to keep them, waters."""
    ligands: dict[str, int] = {}
    waters = 0
    for residue in fixer.topology.residues():
        if residue.name in WATER_NAMES:
            waters += 1
        elif not _is_amino_acid_like(residue):
            ligands[residue.name] = ligands.get(residue.name, 0) + 1
    fixer.removeHeterogens(keepWater=keep_water)
    report = []
    if ligands:
        report.append("removed ligands/ions: " + ", ".join(f"{n} x{c}" for n, c in sorted(ligands.items())))
    if waters and not keep_water:
        report.append(f"removed {waters} water molecule(s) (use --keep-water to keep them)")
    return report


def _replace_nonstandard(fixer: _OfflineFixer) -> list[str]:
    """Swap modified residues PDBFixer knows for their parents; refuse amino acids it does not know."""
    fixer.findNonstandardResidues()
    replaced: dict[str, str] = {}
    for residue, parent in fixer.nonstandardResidues:
        replaced[residue.name] = parent
    fixer.replaceNonstandardResidues()
    for residue in fixer.topology.residues():
        if residue.name not in proteinResidues and _is_amino_acid_like(residue):
            raise StarMDError(
                f"residue {residue.name} {residue.id} (chain {residue.chain.id}) is a non-standard amino acid "
                "with no known template: mutate it to a standard residue in the input file"
            )
    return [f"replaced non-standard residue {k} by {v}" for k, v in sorted(replaced.items())]


@contextmanager
def _reproducible(fixer: _OfflineFixer) -> Iterator[None]:
    """PDBFixer's and Modeller's placements of new atoms, the same on every run. Modeller.addHydrogens starts
    some hydrogens at offsets drawn from Python's global ``random``, and both minimise on OpenMM's CPU platform,
    whose summation order changes with its thread count: seed the first and run one thread, then give the caller
    back its random state and thread default."""
    cpu = openmm.Platform.getPlatformByName("CPU")
    threads = cpu.getPropertyDefaultValue("Threads")
    caller_state = random.getstate()
    cpu.setPropertyDefaultValue("Threads", "1")
    random.seed(0)
    fixer.platform = cpu
    try:
        yield
    finally:
        cpu.setPropertyDefaultValue("Threads", threads)
        random.setstate(caller_state)


def _fill_missing(fixer: _OfflineFixer, add_terminal_residues: bool, ph: float) -> list[str]:
    """Build missing internal residues, missing heavy atoms and hydrogens."""
    report = []
    fixer.findMissingResidues()
    chain_lengths = {c.index: len(list(c.residues())) for c in fixer.topology.chains()}
    terminal = [key for key in fixer.missingResidues if key[1] in (0, chain_lengths[key[0]])]
    if terminal and not add_terminal_residues:
        n_left = sum(len(fixer.missingResidues[key]) for key in terminal)
        for key in terminal:
            del fixer.missingResidues[key]
        report.append(f"left out {n_left} unresolved terminal residue(s) (use --add-terminal-residues to build)")
    n_built = sum(len(v) for v in fixer.missingResidues.values())
    if n_built:
        report.append(f"built {n_built} missing residue(s)")
    fixer.findMissingAtoms()
    n_atoms = sum(len(v) for v in fixer.missingAtoms.values())
    with _reproducible(fixer):
        # PDBFixer hands this seed to OpenMM, which reads 0 as "pick one at random"
        fixer.addMissingAtoms(seed=openmm_seed(0))
        if n_atoms:
            report.append(f"added {n_atoms} missing heavy atom(s)")
        try:
            fixer.addMissingHydrogens(pH=ph)
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0]
            raise StarMDError(f"cannot add hydrogens ({first}): fix or remove that residue in the input") from None
    return report


def _peptide_pdb(sequence: str) -> io.StringIO:
    """Build an extended peptide from one-letter codes with PeptideBuilder; return it as PDB text."""
    from Bio.PDB import PDBIO
    from PeptideBuilder import Geometry, make_structure_from_geos

    sequence = sequence.strip().upper()
    bad = sorted({c for c in sequence if c not in ONE_TO_THREE})
    if not sequence or bad:
        what = f"letters {''.join(bad)}" if bad else "an empty sequence"
        raise StarMDError(f"--sequence has {what}: use one-letter codes of the 20 standard amino acids")
    structure = make_structure_from_geos([Geometry.geometry(c) for c in sequence])
    text = io.StringIO()
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(text)
    text.seek(0)
    return text


def prepare(
    source: str | os.PathLike | None = None,
    sequence: str | None = None,
    model: int = 1,
    chains: list[str] | None = None,
    keep_water: bool = False,
    ph: float = 7.0,
    add_terminal_residues: bool = False,
) -> PreparedStructure:
    """Clean a structure file, or build a peptide, into a simulation-ready all-atom protein.

    Parameters
    ----------
    source
        PDB or mmCIF file. Exactly one of ``source`` and ``sequence`` is given.
    sequence
        One-letter amino-acid codes; the peptide is built in an extended conformation, uncapped.
    model
        NMR model to take, 1-based.
    chains
        Chain ids to keep; ``None`` keeps every chain that holds protein.
    keep_water
        Keep crystal waters instead of removing them.
    ph
        pH used to choose protonation states.
    add_terminal_residues
        Build terminal residues that are in SEQRES but not resolved (off by default: flexible
        unresolved tails are usually better left out than invented).

    Returns
    -------
    PreparedStructure
        Topology, positions (nm) and a report of every change.
    """
    if (source is None) == (sequence is None):
        raise StarMDError("give either an input file or a sequence, not both or neither")
    if sequence is not None:
        fixer = _OfflineFixer(pdbfile=_peptide_pdb(sequence))
        report = [f"built peptide {sequence.strip().upper()} ({len(sequence.strip())} residues)"]
    else:
        path = Path(source)
        fixer, report = _load_fixer(path)
        report += _select_model(fixer, path, model)
    report += _select_chains(fixer, chains)
    # Modified residues first: removeHeterogens would otherwise delete them as ligands.
    report += _replace_nonstandard(fixer)
    report += _remove_heterogens(fixer, keep_water)
    report += _fill_missing(fixer, add_terminal_residues, ph)
    # A crystal cell (CRYST1) is meaningless for an implicit-solvent protein and would make analysis
    # tools apply minimum-image distances; explicit-solvent presets build their own box.
    fixer.topology.setPeriodicBoxVectors(None)
    return PreparedStructure(fixer.topology, fixer.positions, report)


def write_pdb(prepared: PreparedStructure, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a prepared structure as PDB, atomically; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise StarMDError(f"output file {path} already exists: pass --overwrite or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        app.PDBFile.writeFile(prepared.topology, prepared.positions, handle, keepIds=True)
    return path


def load_pdb(path: str | os.PathLike) -> PreparedStructure:
    """Read an already prepared PDB or mmCIF file (as :func:`write_pdb` writes it) without changing it.

    The periodic box is dropped: implicit-solvent runs need none, and explicit presets build their own.
    Raises a one-line :class:`StarMDError` when the file is missing, unreadable or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise StarMDError(f"input file {path} not found: give a prepared PDB (from `starmd prepare`)")
    reader = app.PDBxFile if path.suffix.lower() in (".cif", ".mmcif", ".pdbx") else app.PDBFile
    try:
        structure = reader(str(path))
    except Exception as exc:  # OpenMM's readers raise many types; the user needs one line.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StarMDError(f"cannot read {path}: {first} (give a prepared PDB from `starmd prepare`)") from None
    if structure.topology.getNumAtoms() == 0:
        raise StarMDError(f"{path} has no atoms: give a prepared PDB (from `starmd prepare`)")
    structure.topology.setPeriodicBoxVectors(None)
    return PreparedStructure(structure.topology, structure.positions, [])
