"""Turns a directory of protein–ligand complexes into a pair table CSV.

Layouts (each system is one folder under ROOT, or ROOT itself):
- PLINDER: `<system_id>/receptor.cif` or `receptor.pdb`, ligands in
  `<system_id>/ligand_files/*.sdf` (every `.sdf` below the folder is read).
- PoseBusters: `<id>/<id>_protein_one_lig_removed.pdb` with `<id>/<id>_ligand.sdf`
  (the `<id>_ligands.sdf` of all ligand copies is not read).
- Generic: one `*protein*.pdb` / `*protein*.cif` and any `.sdf` files below the folder.
Structures may be gzip-compressed (`.pdb.gz`, `.cif.gz`).

The output CSV has the columns `system_id, chain_id, aa_sequence, smiles`, one row
per (chain, ligand) pair, deduplicated within a system. Sequences are the
observed residues of each protein chain of the first model (standard 3→1 codes,
MSE→M, anything else → X; water and hetero groups skipped); the SMILES is RDKit's
canonical SMILES of the SDF molecule without explicit hydrogens. With
`--chains nearest` (default) each ligand is paired only with the chain holding
the protein heavy atom closest to any of its heavy atoms; `--chains all` pairs it
with every chain. Unlike the reference system's `build_torchdataset.py`, chains
are split by the parser (no spurious empty chain, no END/TER bug) and hydrogens
are removed from the SMILES.

Bad files are skipped with a count per reason and a warning naming the file.

  python scripts/ingest_complexes.py systems/ pairs.csv --chains nearest
  python scripts/ingest_complexes.py --posebusters-demo pairs.csv

Needs RDKit and biotite (`pip install rdkit==2026.9.1 biotite`); the demo needs
`pip install posebusters==0.6.5`.
"""

import argparse
import csv
import dataclasses
import gzip
import importlib.util
import io
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger("ingest_complexes")

ChainMode = Literal["nearest", "all"]
OUTPUT_COLUMNS = ("system_id", "chain_id", "aa_sequence", "smiles")
POSEBUSTERS_SUFFIX = "_protein_one_lig_removed.pdb"
RECEPTOR_NAMES = (
    "receptor.cif",
    "receptor.cif.gz",
    "receptor.pdb",
    "receptor.pdb.gz",
    "receptor.bcif",
)
STRUCTURE_SUFFIXES = (".pdb", ".pdb.gz", ".cif", ".cif.gz", ".bcif")

THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C",
    "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H", "ILE": "I",
    "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P",
    "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
    "MSE": "M",
}  # fmt: skip
UNKNOWN_RESIDUE = "X"


@dataclasses.dataclass(frozen=True)
class System:
    """One complex: a receptor structure and the SDF files of its ligands."""

    system_id: str
    receptor: Path
    ligand_files: tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class Chain:
    """One protein chain: its sequence and heavy-atom coordinates `[N, 3]`."""

    chain_id: str
    sequence: str
    coords: np.ndarray


@dataclasses.dataclass(frozen=True)
class Ligand:
    """One SDF molecule: canonical SMILES (no explicit H) and heavy-atom coordinates `[M, 3]`."""

    smiles: str
    coords: np.ndarray
    source: str


@dataclasses.dataclass(frozen=True)
class PairRow:
    """One output row."""

    system_id: str
    chain_id: str
    aa_sequence: str
    smiles: str


@dataclasses.dataclass
class IngestReport:
    """What `ingest_directory` found: the rows, and skips counted per reason."""

    systems: int = 0
    systems_with_pairs: int = 0
    rows: list[PairRow] = dataclasses.field(default_factory=list)
    skipped: Counter = dataclasses.field(default_factory=Counter)
    messages: list[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        """Counts one skipped item and logs why, naming the file."""
        self.skipped[reason] += 1
        self.messages.append(message)
        log.warning("%s", message)


class BadFileError(ValueError):
    """A structure or ligand file that cannot be used; the message names it."""


def _find_receptor(folder: Path) -> Path | None:
    """The receptor of a system folder (see the module docstring), or None."""
    for name in RECEPTOR_NAMES:
        if (folder / name).is_file():
            return folder / name
    files = sorted(p for p in folder.iterdir() if p.is_file())
    posebusters = [p for p in files if p.name.endswith(POSEBUSTERS_SUFFIX)]
    if len(posebusters) == 1:
        return posebusters[0]
    candidates = [
        p for p in files if "protein" in p.name.lower() and p.name.endswith(STRUCTURE_SUFFIXES)
    ]
    if len(candidates) > 1:
        raise BadFileError(f"{folder}: several receptor candidates {[p.name for p in candidates]}")
    return candidates[0] if candidates else None


def _ligand_files(folder: Path, receptor: Path) -> tuple[Path, ...]:
    if receptor.name.endswith(POSEBUSTERS_SUFFIX):
        pdb_id = receptor.name[: -len(POSEBUSTERS_SUFFIX)]
        ligand = folder / f"{pdb_id}_ligand.sdf"
        return (ligand,) if ligand.is_file() else ()
    return tuple(sorted(folder.rglob("*.sdf")))


def find_systems(root: str | os.PathLike, report: IngestReport | None = None) -> list[System]:
    """Systems under `root` (its sub-folders, sorted; or `root` itself if it has a receptor).

    Sub-folders without a receptor or without ligand files are skipped and
    counted in `report` (`no_receptor`, `no_ligand_files`, `ambiguous_receptor`).
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    report = report if report is not None else IngestReport()
    try:
        root_receptor = _find_receptor(root)
    except BadFileError:
        root_receptor = None
    folders = (
        [root] if root_receptor is not None else sorted(p for p in root.iterdir() if p.is_dir())
    )
    systems = []
    for folder in folders:
        try:
            receptor = _find_receptor(folder)
        except BadFileError as e:
            report.skip("ambiguous_receptor", str(e))
            continue
        if receptor is None:
            report.skip("no_receptor", f"{folder}: no receptor structure found")
            continue
        ligands = _ligand_files(folder, receptor)
        if not ligands:
            report.skip("no_ligand_files", f"{folder}: no ligand .sdf file found")
            continue
        systems.append(System(folder.name, receptor, ligands))
    return systems


def _load_atoms(path: Path):
    """First model of a PDB/mmCIF/BinaryCIF file (optionally gzip) as a biotite AtomArray."""
    from biotite.structure.io import pdb, pdbx

    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name.endswith(".bcif"):
        return pdbx.get_structure(pdbx.BinaryCIFFile.read(str(path)), model=1)
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            text = f.read()
    else:
        text = path.read_text()
    if name.endswith(".cif"):
        return pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1)
    return pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1)


def read_chains(path: str | os.PathLike) -> list[Chain]:
    """Protein chains of a receptor structure, in file order.

    A residue belongs to the protein when biotite classes it as an amino acid
    and it is an ATOM record, or a HETATM record inside the chain's ATOM residue
    range (a modified residue such as MSE or SEP, not a free amino-acid ligand).

    Raises:
      BadFileError: the file cannot be parsed or holds no protein chain.
    """
    import biotite.structure as struc

    path = Path(path)
    try:
        atoms = _load_atoms(path)
    except Exception as e:  # biotite raises many types for malformed files
        raise BadFileError(f"{path}: cannot parse structure: {type(e).__name__}: {e}") from e
    atoms = atoms[struc.filter_amino_acids(atoms)]
    chains = []
    for chain_id in dict.fromkeys(atoms.chain_id.tolist()):
        chain = atoms[atoms.chain_id == chain_id]
        polymer_ids = chain.res_id[~chain.hetero]
        if polymer_ids.size == 0:
            continue
        inside = (chain.res_id >= polymer_ids.min()) & (chain.res_id <= polymer_ids.max())
        chain = chain[~chain.hetero | inside]
        _, names = struc.get_residues(chain)
        sequence = "".join(THREE_TO_ONE.get(n, UNKNOWN_RESIDUE) for n in names.tolist())
        heavy = chain.coord[chain.element != "H"].astype(np.float64)
        chains.append(Chain(str(chain_id), sequence, heavy))
    if not chains:
        raise BadFileError(f"{path}: no protein chain")
    return chains


def read_ligands(path: str | os.PathLike, report: IngestReport) -> list[Ligand]:
    """Molecules of an SDF file; records RDKit cannot read are counted (`bad_ligand_record`).

    Raises:
      BadFileError: the file cannot be opened or holds no record.
    """
    from rdkit import Chem, rdBase

    path = Path(path)
    try:
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True)
    except OSError as e:
        raise BadFileError(f"{path}: cannot open SDF: {e}") from e
    ligands = []
    records = 0
    with rdBase.BlockLogs():
        for records, mol in enumerate(supplier, start=1):
            where = f"{path}: record {records}"
            if mol is None or mol.GetNumAtoms() == 0:
                report.skip("bad_ligand_record", f"{where} is not a valid molecule")
                continue
            if mol.GetNumConformers() == 0:
                report.skip("bad_ligand_record", f"{where} has no coordinates")
                continue
            heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() != 1]
            coords = mol.GetConformer().GetPositions()[heavy]
            smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
            ligands.append(Ligand(smiles, coords, f"{path}#{records}"))
    if records == 0:
        raise BadFileError(f"{path}: no molecule records")
    return ligands


def min_distance(chain_coords: np.ndarray, ligand_coords: np.ndarray) -> float:
    """Smallest distance between any chain atom `[N, 3]` and any ligand atom `[M, 3]`."""
    best = np.inf
    for xyz in ligand_coords:  # M is small; avoids an [N, M, 3] temporary
        best = min(best, float(np.min(np.sum((chain_coords - xyz) ** 2, axis=-1))))
    return float(np.sqrt(best))


def nearest_chain(chains: Sequence[Chain], ligand: Ligand) -> Chain:
    """The chain whose heavy atoms come closest to the ligand's (first chain on ties)."""
    distances = [min_distance(c.coords, ligand.coords) for c in chains]
    return chains[int(np.argmin(distances))]


def ingest_system(system: System, chains: ChainMode, report: IngestReport) -> list[PairRow]:
    """Pair rows of one system, deduplicated; bad files are counted in `report`."""
    try:
        protein = read_chains(system.receptor)
    except BadFileError as e:
        report.skip("bad_receptor", str(e))
        return []
    rows: dict[PairRow, None] = {}
    for ligand_file in system.ligand_files:
        try:
            ligands = read_ligands(ligand_file, report)
        except BadFileError as e:
            report.skip("bad_ligand_file", str(e))
            continue
        for ligand in ligands:
            paired = protein if chains == "all" else [nearest_chain(protein, ligand)]
            for chain in paired:
                row = PairRow(system.system_id, chain.chain_id, chain.sequence, ligand.smiles)
                rows[row] = None
    return list(rows)


def ingest_directory(root: str | os.PathLike, chains: ChainMode = "nearest") -> IngestReport:
    """Reads every system under `root` (see `find_systems`) into pair rows."""
    if chains not in ("nearest", "all"):
        raise ValueError(f"chains must be 'nearest' or 'all', got {chains!r}")
    report = IngestReport()
    systems = find_systems(root, report)
    report.systems = len(systems)
    for system in systems:
        rows = ingest_system(system, chains, report)
        report.rows.extend(rows)
        report.systems_with_pairs += bool(rows)
    return report


def write_pair_csv(rows: Sequence[PairRow], path: str | os.PathLike) -> None:
    """Writes rows with the header `system_id,chain_id,aa_sequence,smiles`."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(OUTPUT_COLUMNS)
        for row in rows:
            writer.writerow(dataclasses.astuple(row))


def posebusters_demo_dir() -> Path:
    """The 4 PoseBusters complexes shipped in the posebusters wheel (read by path)."""
    spec = importlib.util.find_spec("posebusters")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise FileNotFoundError("the demo complexes need: pip install posebusters==0.6.5")
    return Path(locations[0]) / "datasets" / "pdb"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (1 when no pair was written)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", help="directory of systems")
    parser.add_argument("output", help="pair table CSV to write")
    parser.add_argument("--chains", choices=("nearest", "all"), default="nearest")
    parser.add_argument(
        "--posebusters-demo", action="store_true", help="read the posebusters wheel's 4 complexes"
    )
    args = parser.parse_args(argv)
    if (args.root is None) == (not args.posebusters_demo):
        parser.error("give exactly one of ROOT or --posebusters-demo")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    root = posebusters_demo_dir() if args.posebusters_demo else args.root
    report = ingest_directory(root, args.chains)
    write_pair_csv(report.rows, args.output)
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
    log.info(
        "%d systems, %d with pairs, %d rows -> %s; skipped: %s",
        report.systems, report.systems_with_pairs, len(report.rows), args.output, skipped,
    )  # fmt: skip
    return 0 if report.rows else 1


if __name__ == "__main__":
    sys.exit(main())
