"""The 27 chemical systems of the chemical-system benchmark (preprint Table D3).

Each system is named as in Table D3 (elements in alphabetical order, ``O-Sr-V``) and carries
its two groupings: how explored it is in Alex-MP-ICSD (``well``, ``partially``, ``not``; D.4.1)
and its number of elements. "Well explored" systems were removed from the model's training
data in the paper; :func:`well_explored` names them for the training-set option.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from evaluation.hull.core import chemsys_elements

Exploration = Literal["well", "partially", "not"]
EXPLORATIONS: tuple[Exploration, ...] = ("well", "partially", "not")
#: Table D3, row by row: (exploration, ternary, quaternary, quinary).
_TABLE_D3: tuple[tuple[Exploration, str, str, str], ...] = (
    ("well", "O-Sr-V", "Bi-Cu-Pb-S", "C-H-N-O-S"),
    ("well", "Mn-O-Se", "As-Cl-O-Pb", "Ba-Ca-Cu-O-Tl"),
    ("well", "La-Mo-O", "Fe-Na-O-P", "Eu-F-K-O-Si"),
    ("partially", "Li-Pr-Te", "Cl-Cu-Dy-Rb", "Cu-Gd-O-Ru-Sr"),
    ("partially", "C-Pr-Ru", "Na-Te-Tm-Zr", "La-Na-O-Sb-Sc"),
    ("partially", "C-Mg-Sc", "F-Mg-Rb-Sn", "Cs-F-O-Tl-Zr"),
    ("not", "Br-Pb-Rh", "Cr-Ga-Mg-P", "Al-C-H-Sb-Zr"),
    ("not", "As-Cu-Sr", "C-Cl-Ho-Ru", "As-Br-Cr-I-Pt"),
    ("not", "Cl-Er-In", "Al-Au-Co-S", "K-Mo-O-P-Sr"),
)


@dataclass(frozen=True)
class BenchmarkSystem:
    """One chemical system of the benchmark and its groupings."""

    name: str
    exploration: Exploration | None = None

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.name.split("-"))

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    @property
    def arity(self) -> str:
        """``ternary``, ``quaternary``, ``quinary`` (``N-ary`` beyond)."""
        return {2: "binary", 3: "ternary", 4: "quaternary", 5: "quinary"}.get(
            self.n_elements, f"{self.n_elements}-ary"
        )


TABLE_D3: tuple[BenchmarkSystem, ...] = tuple(
    BenchmarkSystem(name, exploration) for exploration, *names in _TABLE_D3 for name in names
)


def canonical_name(chemsys: str) -> str:
    """``"V-Sr-O"`` -> ``"O-Sr-V"`` (Table D3's alphabetical order); raises ``ValueError`` for
    anything that is not a list of element symbols."""
    return "-".join(sorted(chemsys_elements(chemsys.strip())))


def benchmark_systems(spec: str) -> list[BenchmarkSystem]:
    """The systems ``--systems`` names: ``table-d3`` (all 27), ``table-d3:well`` (one
    exploration group), or a comma-separated list (Table D3's grouping kept for its systems).

    Raises
    ------
    ValueError
        For an unknown group, a bad element symbol, a system of fewer than two elements, or a
        system named twice.
    """
    spec = spec.strip()
    if spec == "table-d3":
        return list(TABLE_D3)
    if spec.startswith("table-d3:"):
        group = spec.split(":", 1)[1]
        if group not in EXPLORATIONS:
            raise ValueError(
                f"unknown group {group!r} in {spec!r}: use table-d3:well, table-d3:partially "
                "or table-d3:not"
            )
        return [s for s in TABLE_D3 if s.exploration == group]
    known = {s.name: s for s in TABLE_D3}
    systems: list[BenchmarkSystem] = []
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        name = canonical_name(raw)
        if name.count("-") < 1:
            raise ValueError(f"{raw!r} has one element; a benchmark system needs at least two")
        if any(s.name == name for s in systems):
            raise ValueError(f"{raw!r} is named twice")
        systems.append(known.get(name, BenchmarkSystem(name)))
    if not systems:
        raise ValueError("no system named: give table-d3 or a list such as O-Sr-V,Li-Pr-Te")
    return systems


def well_explored() -> list[str]:
    """The "well explored" systems of Table D3, removed from training in the paper (D.4.1)."""
    return [s.name for s in TABLE_D3 if s.exploration == "well"]


def excluded_systems(spec: str) -> frozenset[frozenset[str]]:
    """The element sets a training-set option ``spec`` removes: ``table-d3-well-explored`` or a
    comma-separated list of systems. A crystal is removed when its element set is exactly one
    of these (the paper removes the structures *of* those systems; their binaries and
    elements stay, as they do in the paper's Alex-MP-20)."""
    names: Iterable[str]
    if spec.strip() == "table-d3-well-explored":
        names = well_explored()
    else:
        names = [s.name for s in benchmark_systems(spec)]
    return frozenset(frozenset(name.split("-")) for name in names)
