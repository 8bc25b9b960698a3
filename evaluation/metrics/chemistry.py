"""Does a set of crystals look like chemistry? Distributions to compare samples with data.

:func:`describe` profiles a set of crystals: elements, atoms per cell, elements per cell (and
the share with at most four), space groups (spglib, ``symprec`` 0.1; a failed analysis counts as
P1), anonymised stoichiometries (``ABC3``), the share that pymatgen can assign oxidation states
to, and the shortest interatomic distances. :func:`compare` gives the total-variation distances
of two profiles' distributions. Used by ``benchmarks/chemistry.py``,
``benchmarks/generation_quality.py`` and ``benchmarks/model_ablation.py``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pymatgen.core import Composition, Structure

from evaluation.metrics.structure import MIN_INTERATOMIC_DISTANCE, min_interatomic_distance

#: spglib tolerance (Å) for space groups, as the paper's symmetry figures use.
SYMPREC = 0.1
#: Compositions with more elements than this are not given to pymatgen's oxidation-state guess
#: (its enumeration explodes); they count as having no guess.
MAX_ELEMENTS_FOR_OXIDATION_GUESS = 6
#: Distributions compared by :func:`compare`.
DISTRIBUTIONS = ("elements", "atoms_per_cell", "elements_per_cell", "space_groups", "stoichiometry")


def space_group(structure: Structure, symprec: float = SYMPREC) -> int:
    """The spglib space-group number (1 when the analysis fails)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # spglib fails on overlapping atoms: such a cell has no symmetry to speak of
        return 1


def has_oxidation_guess(composition: Composition) -> bool:
    """Whether pymatgen's ``oxi_state_guesses`` finds a charge-balanced assignment."""
    if len(composition.elements) > MAX_ELEMENTS_FOR_OXIDATION_GUESS:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(composition.oxi_state_guesses(max_sites=-50))
        except Exception:  # unusual elements without data
            return False


def distribution(values: Iterable[Any]) -> dict[str, float]:
    """Relative frequencies, most common first, keys as strings."""
    counts = Counter(str(v) for v in values)
    total = sum(counts.values())
    return {key: n / total for key, n in counts.most_common()} if total else {}


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """``½ Σ |p - q|`` over the union of keys."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def describe(structures: Sequence[Structure], symprec: float = SYMPREC) -> dict[str, Any]:
    """The chemistry profile of a set of crystals (see the module docstring)."""
    if not structures:
        return {"n": 0}
    groups = [space_group(s, symprec) for s in structures]
    sizes = [len(s) for s in structures]
    n_elements = [len(s.composition.elements) for s in structures]
    distances = np.array([min_interatomic_distance(s) for s in structures])
    oxidation = [has_oxidation_guess(s.composition) for s in structures]
    return {
        "n": len(structures),
        "elements": distribution(el.symbol for s in structures for el in s.composition.elements),
        "atoms_per_cell": distribution(sizes),
        "elements_per_cell": distribution(n_elements),
        "space_groups": distribution(groups),
        "stoichiometry": distribution(s.composition.anonymized_formula for s in structures),
        "mean_atoms_per_cell": float(np.mean(sizes)),
        "mean_elements_per_cell": float(np.mean(n_elements)),
        "share_at_most_4_elements": float(np.mean([n <= 4 for n in n_elements])),
        "p1_fraction": groups.count(1) / len(groups),
        "distinct_space_groups": len(set(groups)),
        "share_oxidation_guess": float(np.mean(oxidation)),
        "share_min_distance_ok": float(np.mean(distances >= MIN_INTERATOMIC_DISTANCE)),
        "min_distance_quantiles": {
            q: float(np.quantile(distances, float(q))) for q in ("0.05", "0.25", "0.5", "0.75")
        },
    }


def compare(profile: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Total-variation distances of ``profile``'s distributions to ``reference``'s."""
    return {
        f"tv_{name}": total_variation(profile[name], reference[name])
        for name in DISTRIBUTIONS
        if name in profile and name in reference
    }
