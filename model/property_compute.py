"""The per-crystal computations behind :mod:`model.property_labels`.

Each computed property turns a list of pymatgen Structures into one :class:`Outcome` per
structure: a value, or no value and the reason why. A failure is always recorded on the crystal
it belongs to and never raised, so one bad crystal cannot stop a labelling run.

- structure-derived: :func:`chemical_system`, :func:`space_group` (spglib through pymatgen at
  :data:`SYMPREC`, the tolerance of :mod:`evaluation.metrics.chemistry`), :func:`hhi`
  (pymatgen's production HHI);
- looked up: :func:`build_e_hulls` (a data build's own E_hull), :func:`jarvis_gaps_of`
  (published JARVIS-DFT gaps of JARVIS crystals);
- MLFF-derived: :func:`magnetic_densities` (CHGNet site moments, batched single points) and
  :func:`bulk_moduli` (an equation of state on the batched relaxation engine,
  :func:`evaluation.relax.run.relax`).

:func:`run_chunks` spreads chunks of crystals over worker processes (one thread each) and hands
each finished chunk back, so the caller can cache it before the next one arrives.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from evaluation.metrics.chemistry import SYMPREC

#: Crystals per CHGNet forward pass for magnetic moments (64 and 16 measured alike on one CPU
#: thread: about 12 ms per crystal of at most 20 atoms, graph construction included).
MAGMOM_BATCH = 64


@dataclass
class Outcome:
    """The label of one crystal for one property.

    Attributes
    ----------
    value
        The label (float, int or str), or None when the crystal stays unlabelled.
    reason
        Why there is no value (empty when there is one).
    details
        Figures worth keeping beside the value (fit parameters, step counts, ...).
    """

    value: float | int | str | None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.value is not None


# --- structure-derived ------------------------------------------------------------------------
def chemical_system(structure: Structure) -> Outcome:
    """The elements of ``structure`` sorted alphabetically and joined by ``-`` (``Co-Li-O``)."""
    return Outcome("-".join(sorted({el.symbol for el in structure.composition.elements})))


def space_group(structure: Structure, symprec: float = SYMPREC) -> Outcome:
    """The international space-group number (1-230) spglib finds at ``symprec`` (Å).

    Unlike :func:`evaluation.metrics.chemistry.space_group`, which counts a failed analysis as
    P1 for its distributions, a failure here leaves the crystal unlabelled.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        number = int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception as error:  # spglib refuses e.g. overlapping atoms
        return Outcome(None, f"symmetry analysis failed: {type(error).__name__}")
    if not 1 <= number <= 230:
        return Outcome(None, f"spglib returned space group {number}")
    return Outcome(number)


def hhi(structure: Structure) -> Outcome:
    """pymatgen's production Herfindahl-Hirschman index of the composition (0-10000).

    :class:`pymatgen.analysis.hhi.HHIModel` weights each element's production HHI by its mass
    fraction; elements missing from its table (H, the noble gases but He, Tc, the actinides,
    ...) leave the crystal unlabelled rather than being dropped from the sum.
    """
    from pymatgen.analysis.hhi import HHIModel

    table = HHIModel()
    composition = structure.composition
    missing = sorted(
        el.symbol for el in composition.elements if el.symbol not in table.symbol_hhip_hhir
    )
    if missing:
        return Outcome(None, f"no HHI data for {', '.join(missing)}")
    value = table.get_hhi_production(composition)
    if value is None or not math.isfinite(value):
        return Outcome(None, "pymatgen HHIModel gave no value")
    return Outcome(float(value))


# --- looked up -------------------------------------------------------------------------------
#: Where a crystal must come from to have a JARVIS gap (the id prefix of a data build).
JARVIS_SOURCE = "lemat/jarvis"


def build_e_hulls(labels_csv: Path, ids: Sequence[str]) -> list[Outcome]:
    """The ``e_hull`` of each id in a data build's ``labels.csv.gz`` (eV/atom)."""
    with gzip.open(labels_csv, "rt", newline="") as handle:
        rows = {row["id"]: row.get("e_hull", "") for row in csv.DictReader(handle)}
    outcomes = []
    for identifier in ids:
        text = rows.get(identifier)
        if text is None:
            outcomes.append(Outcome(None, "not in labels.csv.gz"))
        elif not text.strip():
            outcomes.append(Outcome(None, "no e_hull in labels.csv.gz"))
        else:
            outcomes.append(Outcome(float(text) + 0.0))  # + 0.0: "-0.000000" -> 0.0
    return outcomes


def jarvis_band_gaps(path: Path | None = None) -> dict[str, tuple[float, list[str]]]:
    """JARVIS id -> (OptB88vdW gap in eV, species) of the shipped reference set's JARVIS
    records (``data/reference/structures.jsonl.gz`` unless ``path``)."""
    from evaluation.paths import reference_dir

    path = path or reference_dir() / "structures.jsonl.gz"
    gaps: dict[str, tuple[float, list[str]]] = {}
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if f'"{JARVIS_SOURCE}"' not in line:
                continue
            record = json.loads(line)
            gap = record.get("properties", {}).get("bandgap_optb88vdw")
            if record.get("source") == JARVIS_SOURCE and isinstance(gap, int | float):
                gaps[record["id"]] = (float(gap), list(record["species"]))
    return gaps


def jarvis_gaps_of(ids: Sequence[str], structures: Sequence[Structure]) -> list[Outcome]:
    """The published JARVIS OptB88vdW gap (eV) of each crystal whose id is
    ``lemat/jarvis:<JVASP id>`` and whose composition is the record's; no other source."""
    from pymatgen.core import Composition

    gaps = jarvis_band_gaps()
    outcomes = []
    for identifier, structure in zip(ids, structures, strict=True):
        source, _, jid = identifier.rpartition(":")
        if source != JARVIS_SOURCE:
            outcomes.append(Outcome(None, "not from JARVIS-DFT"))
        elif jid not in gaps or not math.isfinite(gaps[jid][0]):
            outcomes.append(Outcome(None, "no JARVIS gap in the reference set"))
        elif Composition("".join(gaps[jid][1])) != structure.composition:
            outcomes.append(Outcome(None, "composition differs from the JARVIS record"))
        else:
            outcomes.append(Outcome(gaps[jid][0]))
    return outcomes


# --- MLFF-derived -----------------------------------------------------------------------------
def magnetic_densities(structures: Sequence[Structure], model: str = "chgnet") -> list[Outcome]:
    """``Σ_i |m_i| / V`` (μB/Å³) from CHGNet's site moments, single points in batches.

    CHGNet predicts moment magnitudes (it was trained on |m| of MPtrj), so this is the density
    of the summed absolute moments; ``details`` holds that sum (μB per cell) and the largest
    site moment. A batch that fails is retried crystal by crystal.
    """
    import torch

    from evaluation.relax.calculators import canonical_model_name, chgnet_model

    if canonical_model_name(model) != "chgnet":
        raise ValueError(f"magnetic moments need CHGNet, not {model!r}")
    chgnet, _ = chgnet_model("cpu")
    outcomes: list[Outcome] = []
    for start in range(0, len(structures), MAGMOM_BATCH):
        batch = list(structures[start : start + MAGMOM_BATCH])
        try:
            with torch.no_grad():
                predictions = chgnet.predict_structure(batch, task="em", batch_size=len(batch))
            predictions = predictions if isinstance(predictions, list) else [predictions]
            outcomes += [_density(s, p) for s, p in zip(batch, predictions, strict=True)]
        except Exception:  # one crystal's graph failed: find which, keep the others
            for structure in batch:
                try:
                    with torch.no_grad():
                        prediction = chgnet.predict_structure(structure, task="em")
                    outcomes.append(_density(structure, prediction))
                except Exception as error:
                    outcomes.append(Outcome(None, f"CHGNet failed: {type(error).__name__}"))
    return outcomes


def _density(structure: Structure, prediction: dict[str, Any]) -> Outcome:
    moments = np.abs(np.asarray(prediction["m"], dtype=float).reshape(-1))
    if moments.shape[0] != len(structure) or not np.all(np.isfinite(moments)):
        return Outcome(None, "CHGNet gave no finite moment for every site")
    total = float(moments.sum())
    details = {
        "total_abs_moment": round(total, 6),
        "max_site_moment": round(float(moments.max()), 6),
    }
    return Outcome(total / structure.volume, "", details)


@dataclass(frozen=True)
class EOSSettings:
    """How :func:`bulk_moduli` samples and fits the equation of state.

    Attributes
    ----------
    volume_range
        Volumes span ``(1 ± volume_range)`` times the MLFF-relaxed volume.
    n_volumes
        Evenly spaced volumes in that span (odd: the relaxed volume is one of them).
    fmax
        Force criterion (eV/Å) of the cell relaxation and of the fixed-cell ion relaxations.
    cell_steps, ion_steps
        FIRE step caps of the two relaxations.
    eos
        pymatgen's ``EOS`` name.
    """

    volume_range: float = 0.06
    n_volumes: int = 7
    fmax: float = 0.05
    cell_steps: int = 200
    ion_steps: int = 100
    eos: str = "birch_murnaghan"

    def volume_factors(self) -> np.ndarray:
        return np.linspace(1 - self.volume_range, 1 + self.volume_range, self.n_volumes)

    def key(self) -> str:
        """What a cached bulk modulus must have been computed with."""
        return (
            f"{self.eos}|V=±{self.volume_range}x{self.n_volumes}|fmax={self.fmax}"
            f"|cell_steps={self.cell_steps}|ion_steps={self.ion_steps}"
        )


def bulk_moduli(
    structures: Sequence[Structure], model: str = "chgnet", settings: EOSSettings | None = None
) -> list[Outcome]:
    """Bulk moduli (GPa) from an MLFF equation of state.

    Each crystal is relaxed (cell and ions) with ``model``; the relaxed cell is scaled
    isotropically to :meth:`EOSSettings.volume_factors` of its volume; the ions are relaxed at
    each fixed cell; pymatgen fits ``E(V)`` with :attr:`EOSSettings.eos`. All relaxations run on
    the project's batched engine. A failed relaxation, fit, a non-positive modulus or a fitted
    equilibrium volume outside the sampled ones leaves the crystal unlabelled, with the reason.
    """
    from evaluation.relax.run import relax

    settings = settings or EOSSettings()
    outcomes: list[Outcome | None] = [None] * len(structures)
    cells = relax(
        structures, model, settings.fmax, settings.cell_steps, relax_cell=True, progress=False
    )
    centres: dict[int, Structure] = {}
    for i, result in enumerate(cells):
        if result.ok and result.structure is not None:
            centres[i] = result.structure
        else:
            outcomes[i] = Outcome(None, f"cell relaxation {result.status}: {result.reason}")
    factors = settings.volume_factors()
    scaled, owners = [], []
    for i, centre in centres.items():
        for factor in factors:
            strained = centre.copy()
            strained.scale_lattice(centre.volume * float(factor))
            scaled.append(strained)
            owners.append(i)
    points = (
        relax(scaled, model, settings.fmax, settings.ion_steps, relax_cell=False, progress=False)
        if scaled
        else []
    )
    by_owner: dict[int, list] = {}
    for owner, point in zip(owners, points, strict=True):
        by_owner.setdefault(owner, []).append(point)
    for i, centre in centres.items():
        outcomes[i] = _fit_points(structures[i], centre, cells[i], by_owner[i], factors, settings)
    return [o if o is not None else Outcome(None, "not computed") for o in outcomes]


def _fit_points(
    structure: Structure,
    centre: Structure,
    cell_result: Any,
    points: list,
    factors: np.ndarray,
    settings: EOSSettings,
) -> Outcome:
    """The fit of one crystal's EOS points (``points`` in the order of ``factors``)."""
    for factor, point in zip(factors, points, strict=True):
        if not point.ok or point.energy is None:
            return Outcome(
                None, f"ion relaxation at V/V0={factor:.3f} {point.status}: {point.reason}"
            )
    volumes = np.array([centre.volume * f for f in factors])
    energies = np.array([p.energy for p in points], dtype=float)
    n_atoms = len(structure)
    details: dict[str, Any] = {
        "cell_relaxation": cell_result.status,
        "cell_steps": cell_result.n_steps,
        "ion_steps_max": max(p.n_steps for p in points),
        "ion_not_converged": sum(p.status == "not_converged" for p in points),
        "relaxed_vs_input_volume": round(centre.volume / structure.volume, 5),
    }
    return fit_bulk_modulus(volumes, energies, n_atoms, settings.eos, details)


def fit_bulk_modulus(
    volumes: np.ndarray,
    energies: np.ndarray,
    n_atoms: int,
    eos: str = "birch_murnaghan",
    details: dict[str, Any] | None = None,
) -> Outcome:
    """The bulk modulus (GPa) of a fit of total energies (eV) against cell volumes (Å³).

    Unlabelled when the fit fails, the modulus is not positive and finite, or the fitted
    equilibrium volume lies outside the sampled volumes (an extrapolated minimum).
    """
    from pymatgen.analysis.eos import EOS

    details = dict(details or {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = EOS(eos).fit(list(volumes), list(energies))
            b0, v0, b1 = float(fit.b0_GPa), float(fit.v0), float(fit.b1)
            residual = np.asarray(fit.func(volumes)) - energies
    except Exception as error:
        return Outcome(None, f"EOS fit failed: {type(error).__name__}", details)
    details.update(
        v0_per_atom=round(v0 / n_atoms, 5),
        e0_per_atom=round(float(fit.e0) / n_atoms, 6),
        b1=round(b1, 4),
        rms_mev_per_atom=round(float(np.sqrt(np.mean(residual**2))) / n_atoms * 1000, 4),
    )
    if not math.isfinite(b0) or b0 <= 0:
        return Outcome(None, "non-positive bulk modulus from the fit", details)
    if not volumes.min() <= v0 <= volumes.max():
        return Outcome(None, "fitted equilibrium volume outside the sampled volumes", details)
    return Outcome(b0, "", details)


# --- dispatch ---------------------------------------------------------------------------------
def _structural(function: Callable[[Structure], Outcome]) -> Callable[..., list[Outcome]]:
    def each(structures: Sequence[Structure], model: str = "chgnet") -> list[Outcome]:
        return [function(structure) for structure in structures]

    return each


#: The computed properties: ``(structures, model) -> outcomes``.
COMPUTERS: dict[str, Callable[..., list[Outcome]]] = {
    "chemical_system": _structural(chemical_system),
    "space_group": _structural(space_group),
    "hhi": _structural(hhi),
    "magnetic_density": magnetic_densities,
    "bulk_modulus": bulk_moduli,
}


def compute_chunk(name: str, structures: Sequence[Structure], model: str) -> list[Outcome]:
    """Outcomes of the computed property ``name`` for ``structures`` (one per structure)."""
    outcomes = COMPUTERS[name](list(structures), model)
    if len(outcomes) != len(structures):  # a bug, not a crystal's failure
        raise RuntimeError(f"{name}: {len(outcomes)} outcomes for {len(structures)} crystals")
    return outcomes


def run_chunks(
    name: str,
    chunks: Sequence[Sequence[Structure]],
    model: str,
    n_jobs: int,
    deliver: Callable[[int, list[Outcome]], None],
) -> None:
    """Compute ``name`` for every chunk, in this process (``n_jobs`` 1) or ``n_jobs`` workers.

    ``deliver(chunk index, outcomes)`` is called here, in completion order. A chunk whose
    worker dies is retried alone in a fresh worker; if that dies too, its crystals are
    recorded as failed.
    """
    if n_jobs == 1 or len(chunks) <= 1:
        for c, chunk in enumerate(chunks):
            deliver(c, compute_chunk(name, chunk, model))
        return
    # The workers of the relaxation pool: one thread, a memory cap, gone with their parent.
    from evaluation.relax.parallel import _init_worker, _memory_limit_bytes

    settings = {
        "mp_context": multiprocessing.get_context("spawn"),  # forked torch can deadlock
        "initializer": _init_worker,
        "initargs": (_memory_limit_bytes(n_jobs),),
    }
    broken: list[int] = []
    with ProcessPoolExecutor(n_jobs, **settings) as pool:
        futures = {
            pool.submit(compute_chunk, name, chunk, model): c for c, chunk in enumerate(chunks)
        }
        for future in as_completed(futures):
            c = futures[future]
            try:
                outcomes = future.result()
            except BrokenProcessPool:
                broken.append(c)
                continue
            except Exception as error:
                outcomes = _failed(len(chunks[c]), error)
            deliver(c, outcomes)
    for c in sorted(broken):
        with ProcessPoolExecutor(1, **settings) as alone:
            try:
                outcomes = alone.submit(compute_chunk, name, chunks[c], model).result()
            except Exception as error:
                outcomes = _failed(len(chunks[c]), error)
        deliver(c, outcomes)


def _failed(n: int, error: BaseException) -> list[Outcome]:
    reason = f"worker failed: {type(error).__name__}: {error}"
    return [Outcome(None, reason) for _ in range(n)]
