"""Corpus builder: reference MD of many systems in one ATLAS-layout folder (``starmd md`` with many inputs).

Inputs are expanded, in the order given, into a list of systems, each with a unique name:

* a peptide sequence in one-letter codes (``AKWD``), built with PeptideBuilder (:func:`openmm_starmd.prep.prepare`);
* a PDB/mmCIF file (``.pdb``, ``.cif``, ``.mmcif``, ``.pdbx``), cleaned with :func:`openmm_starmd.prep.prepare`;
* a folder: its structure files, sorted by name (not recursive);
* ``bioemu:PATTERN``: designed mini-proteins shipped by the ``bioemu-benchmarks`` package (found by
  package path, never imported); an empty pattern lists all of them. Entries named by a PDB id are
  reserved for evaluation and refused;
* any other file: a list, one of the above per line (paths relative to the list's folder; ``#`` comments).

Sharding: system ``i`` (0-based, in list order) belongs to shard ``i % N + 1`` of ``--shard I/N``, and
its seed is a hash of (``--seed``, name), so the frames of a system do not depend on N or on which
process builds it; N processes (or a SLURM job array) therefore build the same corpus as one process
without talking to each other. Each system is built by :func:`openmm_starmd.reference.run_reference_md`
with ``resume=True``: a finished ``OUTPUT/NAME`` is skipped, an interrupted ``OUTPUT/.NAME.work`` resumes
from its checkpoint, so rerunning the same command (a requeued job) continues where it stopped.

Files besides the ``NAME/`` folders: ``corpus.json`` (settings and system list; every shard checks that
it matches), ``.inputs/NAME.pdb`` (the prepared structures), ``manifest.shard-I-of-N.jsonl`` (one JSON
line per finished system of that shard, rebuilt from the ``NAME_R{k}.json`` files) and, written by
whichever process finds every system finished, ``manifest.jsonl``: all systems in list order. The
shard manifests together hold exactly its lines (:func:`merge_manifests`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from openmm_starmd import prep
from openmm_starmd.atomic import atomic_write, temporary_path
from openmm_starmd.errors import StarMDError
from openmm_starmd.forcefields import ForceFieldPreset, build_system, fastest_platform, get_preset
from openmm_starmd.units import SECONDS_PER_DAY

STRUCTURE_SUFFIXES = (".pdb", ".cif", ".mmcif", ".pdbx")
# Designed mini-proteins of bioemu-benchmarks, allowed for training; every other entry is named by a
# PDB id and reserved for evaluation.
DESIGNED_PREFIXES = ("EEHEE_", "EHEE_", "HHH_", "EA_", "GG_", "XX_")
BIOEMU = "bioemu:"
# Manifest fields that measure the machine, not the corpus: they differ between otherwise equal builds.
TIMING_KEYS = ("wall_s", "ns_per_day")
_SEQUENCE = re.compile(r"^[ACDEFGHIKLMNPQRSTVWY]+$")
_SETTING_KEYS = ("preset", "forcefield", "nonbonded", "constraints", "hydrogen_mass_amu", "temperature_K",
                 "friction_per_ps", "timestep_ps", "integrator", "equilibration_ps", "stride_ps", "openmm")


@dataclass(frozen=True)
class CorpusSystem:
    """One system of a corpus.

    Attributes
    ----------
    name
        Folder name ``OUTPUT/NAME``: the sequence, the file stem, or the bioemu entry name.
    kind
        ``"sequence"``, ``"structure"`` or ``"bioemu"``.
    source
        The sequence, the structure file's absolute path, or ``bioemu:NAME``.
    path
        Structure file to prepare (``None`` for a sequence).
    """

    name: str
    kind: str
    source: str
    path: str | None = None


@dataclass(frozen=True)
class CorpusSettings:
    """The MD settings shared by every system (ps, K, 1/ps); see :func:`run_reference_md`."""

    time_ps: float
    stride_ps: float
    equilibration_ps: float
    replicas: int
    forcefield: str
    temperature_k: float
    friction_per_ps: float
    seed: int


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``; raises :class:`StarMDError` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise StarMDError(f"cannot read --shard {text!r}: give I/N, e.g. 1/4 (shard I of N, I from 1 to N)")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise StarMDError(f"--shard {text}: I must be between 1 and N (with a 0-based SLURM array use "
                          "$((SLURM_ARRAY_TASK_ID + 1))/N)")
    return index, count


def system_seed(seed: int, name: str) -> int:
    """The base seed of one system: a hash of the corpus seed and its name, in [0, 2**30)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**30


def bioemu_assets() -> Path:
    """The ``assets`` folder of the installed ``bioemu-benchmarks`` package, located without importing it."""
    spec = importlib.util.find_spec("bioemu_benchmarks")
    if spec is None or not spec.submodule_search_locations:
        raise StarMDError("bioemu: needs the bioemu-benchmarks package: pip install --no-deps bioemu-benchmarks "
                          "(its declared dependencies would downgrade numpy and mdtraj)")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not assets.is_dir():
        raise StarMDError(f"bioemu-benchmarks has no assets folder at {assets}: reinstall it with --no-deps")
    return assets


def bioemu_systems(pattern: str) -> list[CorpusSystem]:
    """Designed mini-proteins of bioemu-benchmarks whose name matches ``pattern`` (a shell glob; empty: all).

    Raises
    ------
    StarMDError
        If the pattern matches an entry named by a PDB id (reserved for evaluation) or nothing.
    """
    structures: dict[str, Path] = {}
    for path in sorted(bioemu_assets().rglob("*.pdb")):
        structures.setdefault(path.stem, path)
    rule = f"only designed mini-proteins ({', '.join(p + '*' for p in DESIGNED_PREFIXES)}) may be trained on"
    if pattern:
        names = [name for name in structures if fnmatch.fnmatchcase(name, pattern)]
        reserved = [name for name in names if not name.startswith(DESIGNED_PREFIXES)]
        if reserved:
            shown = ", ".join(reserved[:3]) + (", ..." if len(reserved) > 3 else "")
            raise StarMDError(f"{BIOEMU}{pattern} names {shown}, reserved for evaluation: {rule}")
    else:
        names = [name for name in structures if name.startswith(DESIGNED_PREFIXES)]
    if not names:
        raise StarMDError(f"{BIOEMU}{pattern} matches no bioemu-benchmarks structure: give a name such as "
                          "EHEE_rd3_0053, a glob such as 'EEHEE_*', or nothing for all designed ones")
    return [CorpusSystem(name, "bioemu", f"{BIOEMU}{name}", str(structures[name])) for name in sorted(names)]


def _structure(path: Path) -> CorpusSystem:
    if not path.is_file() or path.stat().st_size == 0:
        raise StarMDError(f"structure file {path} is missing or empty: check the path")
    return CorpusSystem(path.stem, "structure", str(path.resolve()), str(path.resolve()))


def _entry(token: str, base: Path, in_list: bool) -> list[CorpusSystem]:
    """The systems one input names (a command-line argument, or a line of a list file)."""
    if token.startswith(BIOEMU):
        return bioemu_systems(token[len(BIOEMU):])
    path = base / token
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in STRUCTURE_SUFFIXES)
        if not found:
            raise StarMDError(f"folder {path} holds no structure files ({', '.join(STRUCTURE_SUFFIXES)})")
        return [_structure(p) for p in found]
    if path.suffix.lower() in STRUCTURE_SUFFIXES:
        return [_structure(path)]
    if path.is_file():
        if in_list:
            raise StarMDError(f"{token} is neither a structure file nor a folder: list files cannot be nested")
        return _list_file(path)
    if _SEQUENCE.match(token):
        return [CorpusSystem(token, "sequence", token)]
    raise StarMDError(f"{token!r} is not a sequence (one-letter codes, e.g. AKWD), a structure file "
                      f"({', '.join(STRUCTURE_SUFFIXES)}), a folder, a list file or bioemu:NAME: check it")


def _list_file(path: Path) -> list[CorpusSystem]:
    systems: list[CorpusSystem] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        try:
            systems += _entry(token, path.parent, in_list=True)
        except StarMDError as exc:
            raise StarMDError(f"{path} line {number}: {exc}") from None
    return systems


def collect_systems(inputs: Sequence[str]) -> list[CorpusSystem]:
    """Expand the inputs into the corpus's systems, in order; names must be unique.

    Raises
    ------
    StarMDError
        On an input that names nothing usable, an empty corpus, or two systems with one name.
    """
    systems: list[CorpusSystem] = []
    for token in inputs:
        systems += _entry(str(token), Path.cwd(), in_list=False)
    if not systems:
        raise StarMDError("the inputs name no systems: give sequences, structure files, folders or list files")
    seen: dict[str, CorpusSystem] = {}
    for system in systems:
        if system.name.startswith(".") or Path(system.name).name != system.name:
            raise StarMDError(f"system name {system.name!r} cannot be a folder name: rename the file")
        if system.name in seen:
            raise StarMDError(f"two inputs give the system name {system.name} ({seen[system.name].source} and "
                              f"{system.source}): list each system once, renaming files that share a stem")
        seen[system.name] = system
    return systems


def is_finished(output: Path, name: str) -> bool:
    """Whether ``output/NAME`` is complete (it is only published once every replica is)."""
    return (output / name / f"{name}.pdb").is_file()


def manifest_entry(output: Path, index: int, system: CorpusSystem, replicas: int) -> dict:
    """One manifest line of a finished system, rebuilt from its ``NAME_R{k}.json`` files."""
    folder = output / system.name
    meta = [json.loads((folder / f"{system.name}_R{k}.json").read_text()) for k in range(1, replicas + 1)]
    first = meta[0]
    ns, wall_s = sum(m["ns"] for m in meta), sum(m["wall_s"] for m in meta)
    return {
        "index": index, "name": system.name, "kind": system.kind, "source": system.source,
        "folder": system.name, "sequence": first["sequence"],
        "n_atoms": first["n_atoms"], "n_residues": first["n_residues"],
        "settings": {key: first[key] for key in _SETTING_KEYS},
        "seed": first["base_seed"], "replicas": replicas, "replica_seeds": [m["seed"] for m in meta],
        "frames": sum(m["frames"] for m in meta), "frames_per_replica": [m["frames"] for m in meta],
        "ns": round(ns, 9), "platform": "+".join(sorted({m["platform"] for m in meta})),
        "wall_s": round(wall_s, 1),
        "ns_per_day": round(ns / (wall_s / SECONDS_PER_DAY), 1) if wall_s > 0 else None,
    }


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """The entries of a manifest file (one JSON object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def merge_manifests(output: str | os.PathLike) -> list[dict]:
    """All shard manifests of a corpus merged: one entry per system, in list order (like ``manifest.jsonl``)."""
    entries = {}
    for path in sorted(Path(output).glob("manifest.shard-*.jsonl")):
        for entry in read_manifest(path):
            entries[entry["index"]] = entry
    return [entries[index] for index in sorted(entries)]


def _write_jsonl(path: Path, entries: list[dict]) -> None:
    with atomic_write(path) as handle:
        handle.writelines(json.dumps(entry) + "\n" for entry in entries)


def _claim_record(path: Path, record: dict) -> None:
    """Create ``corpus.json`` unless it exists (a hard link cannot replace a file, so racing shards are safe);
    an existing one must hold the same record."""
    if not path.is_file():
        tmp = temporary_path(path)
        try:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    _check_record(path, record)


def _check_record(path: Path, record: dict) -> None:
    saved = json.loads(path.read_text())
    if saved.get("settings") != record["settings"]:
        diff = [key for key in record["settings"] if saved.get("settings", {}).get(key) != record["settings"][key]]
        raise StarMDError(f"the corpus in {path.parent} was started with other settings ({', '.join(diff)}): "
                          "repeat its options (see corpus.json) or choose another --output")
    if saved.get("systems") != record["systems"]:
        raise StarMDError(f"the corpus in {path.parent} was started with other inputs: give the same inputs "
                          "(see corpus.json) or choose another --output")


def _prepare(system: CorpusSystem, seed: int, preset: ForceFieldPreset) -> prep.PreparedStructure:
    """Prepare one system (:func:`openmm_starmd.prep.prepare`) and check that the force field takes it."""
    # PDBFixer and OpenMM's Modeller place added atoms with Python's global random module; seeding it per
    # system makes the prepared structure (and so every frame) independent of the process that builds it.
    saved = random.getstate()
    random.seed(seed)
    try:
        structure = (prep.prepare(sequence=system.source) if system.kind == "sequence"
                     else prep.prepare(system.path))
        build_system(structure.topology, structure.positions, preset)
    except StarMDError as exc:
        raise StarMDError(f"system {system.name} ({system.source}): {exc}") from None
    finally:
        random.setstate(saved)
    return structure


def build_corpus(
    inputs: Sequence[str],
    output: str | os.PathLike,
    settings: CorpusSettings,
    *,
    shard: tuple[int, int] = (1, 1),
    platform: str | None = None,
    checkpoint_interval_s: float = 60.0,
    show_progress: bool = True,
) -> list[dict]:
    """Build (or continue) this shard's part of a corpus of reference MD; see the module docstring.

    Parameters
    ----------
    inputs
        Sequences, structure files, folders, list files and ``bioemu:PATTERN`` sources.
    output
        Corpus root: ``output/NAME/`` per system (ATLAS layout), manifests, ``corpus.json``.
    settings
        MD settings of every system (``seed`` is the corpus seed; each system hashes it with its name).
    shard
        ``(I, N)``: build the systems ``i`` with ``i % N == I - 1``.
    platform, checkpoint_interval_s, show_progress
        As for :func:`openmm_starmd.reference.run_reference_md`; the corpus bar counts finished systems
        of every shard.

    Returns
    -------
    list of dict
        The manifest entries of this shard's finished systems.
    """
    from openmm_starmd import reference

    output = Path(output)
    index, count = shard
    preset = get_preset(settings.forcefield)
    reference._plan(settings.time_ps, settings.stride_ps, settings.equilibration_ps, settings.replicas, preset,
                    settings.temperature_k, settings.friction_per_ps, settings.seed)
    if checkpoint_interval_s < 0:
        raise StarMDError(f"checkpoint interval must not be negative, got {checkpoint_interval_s:g} s")
    fastest_platform(platform)
    if output.exists() and not output.is_dir():
        raise StarMDError(f"output {output} exists and is not a folder: choose another path")
    systems = collect_systems(inputs)
    # Paths to installed packages may differ between nodes; a system is its name, kind and source.
    record = {"settings": asdict(settings), "systems": [[s.name, s.kind, s.source] for s in systems]}
    record_path = output / "corpus.json"
    if record_path.is_file():
        _check_record(record_path, record)
    else:
        taken = [s.name for s in systems if (output / s.name).exists() or reference.work_dir(output, s.name).exists()]
        if taken:
            raise StarMDError(f"{output / taken[0]} exists but {output} holds no corpus.json (not a corpus built "
                              "by starmd md): choose an empty --output")
    mine = [(i, s) for i, s in enumerate(systems) if i % count == index - 1]
    inputs_dir = output / ".inputs"
    # Prepare (and check that the force field takes) every structure still to build before writing anything.
    prepared = {}
    for _, system in mine:
        if is_finished(output, system.name) or (inputs_dir / f"{system.name}.pdb").is_file():
            continue
        prepared[system.name] = _prepare(system, system_seed(settings.seed, system.name), preset)

    inputs_dir.mkdir(parents=True, exist_ok=True)
    _claim_record(record_path, record)
    for name, structure in prepared.items():
        prep.write_pdb(structure, inputs_dir / f"{name}.pdb", overwrite=True)
    shard_manifest = output / f"manifest.shard-{index}-of-{count}.jsonl"

    def shard_entries() -> list[dict]:
        return [manifest_entry(output, i, s, settings.replicas) for i, s in mine if is_finished(output, s.name)]

    def corpus_done() -> int:
        return sum(is_finished(output, s.name) for s in systems)

    bar = tqdm(total=len(systems), initial=corpus_done(), unit="system", disable=not show_progress,
               desc=f"corpus (shard {index}/{count}: {len(mine)} systems)", dynamic_ncols=True)
    with bar:
        for _, system in mine:
            if not is_finished(output, system.name):
                reference.run_reference_md(
                    inputs_dir / f"{system.name}.pdb", output, name=system.name, time_ps=settings.time_ps,
                    stride_ps=settings.stride_ps, equilibration_ps=settings.equilibration_ps,
                    replicas=settings.replicas, forcefield=settings.forcefield,
                    temperature_k=settings.temperature_k, friction_per_ps=settings.friction_per_ps,
                    seed=system_seed(settings.seed, system.name), platform=platform, resume=True,
                    checkpoint_interval_s=checkpoint_interval_s, show_progress=show_progress,
                    source=Path(system.source).name if system.kind == "structure" else system.source,
                    sequence=system.source if system.kind == "sequence" else None,
                )
                _write_jsonl(shard_manifest, shard_entries())
            bar.n = corpus_done()
            bar.refresh()
    entries = shard_entries()
    _write_jsonl(shard_manifest, entries)
    if corpus_done() == len(systems):
        # Any shard may be the last to finish; all of them would write the same bytes.
        _write_jsonl(output / "manifest.jsonl",
                     [manifest_entry(output, i, s, settings.replicas) for i, s in enumerate(systems)])
    return entries
