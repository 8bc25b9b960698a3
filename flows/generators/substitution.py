"""Ion substitution: the paper's data-mined substitution baseline (Hautier et al. 2011).

Every source crystal (the shipped prototypes and the reference set) with as many elements as
the target system is redecorated with the target elements wherever Hautier's model finds the
substitution likely. The rule is pymatgen's ``Substitutor.pred_from_structures``:

* species carry oxidation states; a source element ``s_i`` may become target species ``t_i``
  when the product of conditional probabilities ``Π p(t_i | s_i)`` of the λ table
  (``SubstitutionProbability.cond_prob_list``) is at least ``threshold`` and the result is
  charge balanced;
* only maps between the same number of species are tried (no element is added or removed).

Oxidation states come from the most probable charge-balanced assignment, one state per
element, that pymatgen's ``Composition.oxi_state_guesses`` would consider (an element's ICSD
oxidation states, else its common ones; scored by ICSD occurrence). Targets may take any of
their such states that the λ table knows. Mixed-valence sources and elements the λ table does
not know (noble gases, most carbides' C4-, ...) cannot be decorated and are skipped.

pymatgen's own ``Substitutor`` builds a ``TransformedStructure`` for every pair before any
filtering; with ~20k sources this is minutes, so the same arithmetic is done here on cheap
summaries first (arity → charge feasibility → λ probability) and structures are built only for
the accepted maps. The cell is rescaled by the ratio of summed cubed ionic radii (atomic radii
where an ionic one is missing) and duplicates are removed with
:func:`evaluation.matching.index.find_duplicates`, keeping the most probable decoration of each.

At pymatgen's default threshold (1e-3) a ternary gets tens of candidates from the shipped
sources (Li-Co-O: 14; 130 at 1e-5); the paper's 15,000–70,000 per system came from 5,143 ICSD
prototypes, which cannot ship here. Lower ``threshold`` for a broader enumeration, or set
``enumerate_all``: every map of a source's elements onto the system's, without oxidation
states (intermetallics and mixed valence included), after the λ-probable ones and in a seeded
random order; this is the chemical-system benchmark's "every unique substitution" (D.4.1),
which reaches systems the λ model cannot (Li-Pr-Te: none probable, every map possible).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import permutations, product
from pathlib import Path
from typing import Any

import numpy as np
import pymatgen.core
from monty.serialization import loadfn
from pymatgen.core import Element, Species, Structure
from pymatgen.core.structure_prediction.substitution_probability import SubstitutionProbability

from evaluation.io.crystals import read_crystals
from evaluation.matching.index import find_duplicates
from evaluation.paths import data_dir
from evaluation.records import CrystalRecord
from evaluation.reference import load_reference
from flows.generators.chemsys import parse_chemsys, require_arity

__all__ = [
    "LAMBDA_TABLE_FILE",
    "PROTOTYPES_FILE",
    "generate_substitutions",
    "load_lambda_table",
    "load_prototypes",
    "substitution_probability",
]

#: The shipped files, relative to :func:`evaluation.paths.data_dir`.
PROTOTYPES_FILE = Path("prototypes") / "prototypes.jsonl.gz"
LAMBDA_TABLE_FILE = Path("priors") / "substitution_lambda.json"


# ------------------------------------------------------------------------------------ data


def load_prototypes(path: str | Path | None = None) -> list[CrystalRecord]:
    """The prototype crystals (default: the shipped ``data/prototypes/prototypes.jsonl.gz``)."""
    return read_crystals(Path(path) if path else data_dir() / PROTOTYPES_FILE).records


def load_lambda_table(path: str | Path | None = None) -> list[list[Any]]:
    """Rows ``[species1, species2, lambda]`` of Hautier's λ table (default: the shipped one)."""
    with open(Path(path) if path else data_dir() / LAMBDA_TABLE_FILE, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=4)
def substitution_probability(path: str | None = None) -> SubstitutionProbability:
    """pymatgen's substitution model on a λ table (built once per table: it takes ~1 s)."""
    return SubstitutionProbability(lambda_table=load_lambda_table(path))


@lru_cache(maxsize=1)
def _shipped_prototypes() -> tuple[CrystalRecord, ...]:
    return tuple(load_prototypes())


@lru_cache(maxsize=1)
def _shipped_reference() -> tuple[CrystalRecord, ...]:
    # Reading the reference set takes seconds: done once per process.
    return tuple(load_reference().records)


@lru_cache(maxsize=1)
def _icsd_occurrence() -> dict[Species, float]:
    """How often each species occurs in the ICSD (pymatgen's oxidation-state guess scores)."""
    table = loadfn(Path(pymatgen.core.__file__).parent / "icsd_bv.yaml")["occurrence"]
    return {Species.from_str(name): float(value) for name, value in table.items()}


# ----------------------------------------------------------------------- oxidation states


@cache
def _allowed_species(element: str, model_species: frozenset[Species]) -> tuple[Species, ...]:
    """The species an element may be: its ICSD (else common) oxidation states the λ table knows."""
    element_data = Element(element)
    states = element_data.icsd_oxidation_states or element_data.common_oxidation_states
    return tuple(
        species
        for state in sorted(states)
        if (species := Species(element, state)) in model_species and state != 0
    )


@cache
def _decorate(
    formula: tuple[tuple[str, int], ...], model_species: frozenset[Species]
) -> tuple[Species, ...] | None:
    """Most probable charge-balanced single-valence species for a reduced formula, or None."""
    options = [_allowed_species(element, model_species) for element, _ in formula]
    counts = [count for _, count in formula]
    occurrence = _icsd_occurrence()
    best, best_score = None, -1.0
    for combination in product(*options):
        if sum(sp.oxi_state * n for sp, n in zip(combination, counts, strict=True)) != 0:
            continue
        score = sum(occurrence.get(sp, 0.0) * n for sp, n in zip(combination, counts, strict=True))
        if score > best_score:  # strict: ties keep the first, lowest oxidation states
            best, best_score = combination, score
    return best


def _reduced_formula(structure: Structure) -> tuple[tuple[str, int], ...] | None:
    """``(("Co", 1), ("Li", 1), ("O", 2))`` for an ordered crystal, None for a disordered one."""
    if not structure.is_ordered:
        return None
    amounts = structure.composition.element_composition  # oxidation states dropped
    counts = {element.symbol: round(amount) for element, amount in amounts.items()}
    divisor = math.gcd(*counts.values())
    return tuple(sorted((symbol, count // divisor) for symbol, count in counts.items()))


def _charge_feasible(counts: tuple[int, ...], target_charges: list[tuple[int, ...]]) -> bool:
    """Could some assignment of the target elements (and their states) to these counts be
    neutral? Cheap test on counts alone, before a source is decorated."""
    for order in permutations(range(len(target_charges))):
        sums = {0}
        for count, element_index in zip(counts, order, strict=True):
            sums = {s + count * charge for s in sums for charge in target_charges[element_index]}
        if 0 in sums:
            return True
    return False


# ------------------------------------------------------------------------------ decoration


@dataclass(frozen=True)
class _Decoration:
    """One accepted substitution: a source and the target species of each source species."""

    probability: float
    source: CrystalRecord
    source_species: tuple[Species, ...]
    target_species: tuple[Species, ...]

    @property
    def species_map(self) -> dict[str, str]:
        return {
            str(s): str(t) for s, t in zip(self.source_species, self.target_species, strict=True)
        }

    @property
    def species_map_symbols(self) -> tuple[tuple[str, str], ...]:
        """The map by element, oxidation states dropped (to tell maps apart across modes)."""
        return tuple(
            (s.symbol, t.symbol)
            for s, t in zip(self.source_species, self.target_species, strict=True)
        )


def _plain_decorations(
    source: CrystalRecord,
    formula: tuple[tuple[str, int], ...],
    elements: Sequence[str],
    probable: set[tuple[str, tuple[tuple[str, str], ...]]],
) -> list[_Decoration]:
    """Every map of the source's elements onto ``elements`` (no oxidation states), except the
    identity and the maps the λ model already accepted."""
    source_species = tuple(Species(symbol, None) for symbol, _ in formula)
    found = []
    for order in permutations(elements):
        if all(t == s.symbol for t, s in zip(order, source_species, strict=True)):
            continue
        target = tuple(Species(symbol, None) for symbol in order)
        decoration = _Decoration(0.0, source, source_species, target)
        if (source.label, decoration.species_map_symbols) not in probable:
            found.append(decoration)
    return found


def _unique_structures(
    decorations: Sequence[_Decoration], max_candidates: int | None, chunk: int = 256
) -> list[tuple[_Decoration, Structure]]:
    """The decorations' structures in order, duplicates (of an earlier one) removed, at most
    ``max_candidates``. Without a cap that can cut, all are matched in one pass; with one,
    structures are built in chunks that double in size, so a cap stops early and the kept
    ones are re-matched only a logarithmic number of times."""
    cap = max_candidates if max_candidates is not None else len(decorations)
    kept: list[tuple[_Decoration, Structure]] = []
    start = 0
    while start < len(decorations) and len(kept) < cap:
        size = len(decorations) if cap >= len(decorations) else chunk
        batch = [(d, _substituted_structure(d)) for d in decorations[start : start + size]]
        duplicates = find_duplicates([s for _, s in kept] + [s for _, s in batch])
        fresh = duplicates[len(kept) :]
        kept += [item for item, dup in zip(batch, fresh, strict=True) if dup is None]
        start += size
        chunk *= 2
    return kept[:cap]


def _decorations_of(
    source: CrystalRecord,
    source_species: tuple[Species, ...],
    counts: tuple[int, ...],
    target_options: list[tuple[Species, ...]],
    model: SubstitutionProbability,
    threshold: float,
) -> list[_Decoration]:
    """Every map of this source's species onto the target elements that passes the λ and
    charge tests, the most probable oxidation states per element map (identity maps skipped:
    they give the source back)."""
    found = []
    for order in permutations(range(len(target_options))):
        targets = [target_options[i] for i in order]
        if all(t[0].symbol == s.symbol for t, s in zip(targets, source_species, strict=True)):
            continue
        best: _Decoration | None = None
        for combination in product(*targets):
            if sum(t.oxi_state * c for t, c in zip(combination, counts, strict=True)) != 0:
                continue
            probability = model.cond_prob_list(list(combination), list(source_species))
            if probability >= threshold and (best is None or probability > best.probability):
                best = _Decoration(probability, source, source_species, combination)
        if best is not None:
            found.append(best)
    return found


@cache
def _radius(species: Species) -> tuple[float | None, float]:
    """(ionic radius or None, atomic radius) in Å."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for every species without one
        ionic = species.ionic_radius
    atomic = Element(species.symbol).atomic_radius or Element(species.symbol).average_ionic_radius
    return (float(ionic) if ionic else None), float(atomic or 1.0)


def _substituted_structure(decoration: _Decoration) -> Structure:
    """The source with its species replaced, cell rescaled by the cubed-radius ratio."""
    source = decoration.source.structure
    by_symbol = dict(
        zip(
            (s.symbol for s in decoration.source_species),
            zip(decoration.source_species, decoration.target_species, strict=True),
            strict=True,
        )
    )
    old_volume = new_volume = 0.0
    species = []
    for site in source:
        old, new = by_symbol[site.specie.symbol]
        (old_ionic, old_atomic), (new_ionic, new_atomic) = _radius(old), _radius(new)
        # Ionic radii when both ions have one, else atomic radii for both: a ratio of like radii.
        both_ionic = old_ionic is not None and new_ionic is not None
        old_volume += (old_ionic if both_ionic else old_atomic) ** 3
        new_volume += (new_ionic if both_ionic else new_atomic) ** 3
        species.append(new.symbol)
    structure = Structure(source.lattice, species, source.frac_coords)
    structure.scale_lattice(source.volume * new_volume / old_volume)
    return structure


# ------------------------------------------------------------------------------- generator


def generate_substitutions(
    chemsys: str | Sequence[str],
    *,
    prototypes: list[CrystalRecord] | None = None,
    reference: list[CrystalRecord] | None = None,
    threshold: float = 1e-3,
    max_candidates: int | None = None,
    max_sites: int = 100,
    seed: int = 0,
    enumerate_all: bool = False,
) -> list[CrystalRecord]:
    """Every unique ion-substitution candidate of a chemical system (see the module docstring).

    Parameters
    ----------
    chemsys
        ``"Li-Co-O"`` or a sequence of element symbols; at least two elements.
    prototypes, reference
        Source crystals; ``None`` for the shipped prototypes and the shipped reference set.
        Only ordered crystals with as many elements as the system are used.
    threshold
        Minimum substitution probability ``Π p(t_i | s_i)`` (pymatgen's default, 1e-3).
    max_candidates
        Keep at most this many, the most probable first.
    max_sites
        Skip sources with more sites (the paper's prototypes have fewer than 100 atoms).
    seed
        Orders the maps outside the λ model (``enumerate_all``) when ``max_candidates`` cuts
        them; otherwise unused (ties are broken by parent label, then species map).
    enumerate_all
        Also every other map of a source's elements onto the system's elements, without
        oxidation states or the λ model (the paper's "every unique substitution of the
        prototypes", D.4.1, which takes intermetallics and mixed valence too). They come after
        the λ-probable ones (probability 0), in a seeded random order.

    Returns
    -------
    list[CrystalRecord]
        ``sub-<n>`` records (source ``"substitution"``) sorted by probability (descending),
        then parent; properties = provenance: generator, parent (``source:id``), prototype,
        species_map (source species → target species), probability, index. Empty when no
        source can be decorated with the system (e.g. noble gases).
    """
    elements = parse_chemsys(chemsys if isinstance(chemsys, str) else "-".join(chemsys))
    require_arity(elements, 2, "substitution")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if max_candidates is not None and max_candidates < 0:
        raise ValueError(f"max_candidates must be non-negative, got {max_candidates}")
    if max_sites < 1:
        raise ValueError(f"max_sites must be at least 1, got {max_sites}")

    model = substitution_probability()
    model_species = frozenset(model.species)
    target_options = [_allowed_species(element, model_species) for element in elements]
    target_charges = [tuple(sp.oxi_state for sp in options) for options in target_options]

    sources = [
        *(_shipped_prototypes() if prototypes is None else prototypes),
        *(_shipped_reference() if reference is None else reference),
    ]

    decorations: list[_Decoration] = []
    # an element without a species the λ table knows has no probable substitution
    for source in sources if all(target_options) else ():
        structure = source.structure
        if len(structure) > max_sites:
            continue
        formula = _reduced_formula(structure)
        if formula is None or len(formula) != len(elements):
            continue
        counts = tuple(count for _, count in formula)
        if not _charge_feasible(counts, target_charges):
            continue
        source_species = _decorate(formula, model_species)
        if source_species is None:
            continue
        decorations += _decorations_of(
            source, source_species, counts, target_options, model, threshold
        )

    if enumerate_all:  # every other map of the source's elements onto the system's
        probable = {(d.source.label, d.species_map_symbols) for d in decorations}
        for source in sources:
            structure = source.structure
            formula = _reduced_formula(structure) if len(structure) <= max_sites else None
            if formula is None or len(formula) != len(elements):
                continue
            decorations += _plain_decorations(source, formula, elements, probable)
    rng = np.random.default_rng(seed)  # a seeded, unbiased order among the plain maps
    shuffle = {id(d): float(rng.random()) for d in decorations if d.probability == 0}
    decorations.sort(
        key=lambda d: (
            -d.probability,
            shuffle.get(id(d), 0.0),
            d.source.label,
            json.dumps(d.species_map, sort_keys=True),
        )
    )
    records: list[CrystalRecord] = []
    for decoration, structure in _unique_structures(decorations, max_candidates):
        index = len(records)
        parent = decoration.source
        properties = {
            "generator": "substitution",
            "parent": parent.label,
            "prototype": parent.properties.get("prototype") or parent.formula,
            "species_map": decoration.species_map,
            "probability": decoration.probability,
            "index": index,
            "threshold": threshold,
            "mode": "all" if enumerate_all else "probable",
        }
        records.append(CrystalRecord(structure, f"sub-{index}", "substitution", properties))
    return records
