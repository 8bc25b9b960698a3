"""A pymatgen shortcut that public API would make slower, verified on pymatgen-core 2026.10.16.

:func:`p1_structure_like_cifparser` builds the ``Structure`` that ``CifParser`` builds from a
simple P1 block (its coordinate snapping, wrapping and site order) directly. Measured on 2
shared cores, one thread, 600 perov_5 + LeMat blocks: 1.0-1.35 ms per block against 3.9-4.5 ms
through ``CifParser`` (3-4.5x), which every data set read pays.

Outside the verified range :func:`cifparser_clone_allowed` is false and every block goes through
``CifParser``, with one logged warning. ``tests/evaluation/test_compat_shortcuts.py`` compares
the clone with ``CifParser`` on real CIFs, in and outside the range.

(``StructureMatcher._preprocess``/``._match`` are *not* used: the public
``fit(..., skip_structure_reduction=True)`` measured only 3-7 % slower end to end.)
"""

from __future__ import annotations

import warnings
from functools import cmp_to_key

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure

from evaluation.compat import VerifiedRange, shortcut_allowed

#: CifParser lives in the ``pymatgen-core`` distribution, not in ``pymatgen``.
VERIFIED = VerifiedRange("pymatgen-core", "2026.10.16", "2026.10.16")

#: CifParser's tolerance for snapping coordinates onto 1/3 and 2/3.
CIFPARSER_FRAC_TOLERANCE = 1e-4
#: CifParser's tolerance for two sites being the same site (it merges them).
CIFPARSER_SITE_TOLERANCE = 1e-4


def cifparser_clone_allowed() -> bool:
    """Whether :func:`p1_structure_like_cifparser` may be used (else parse with CifParser)."""
    return shortcut_allowed(VERIFIED, "P1 clone of CifParser")


def snap_like_cifparser(coords: np.ndarray) -> np.ndarray:
    """Coordinates within 1e-4 (relative) of 1/3 or 2/3 set onto them, as CifParser does."""
    coords = np.array(coords, dtype=float)
    for ideal in (1 / 3, 2 / 3):
        coords[np.abs(coords / ideal - 1) <= CIFPARSER_FRAC_TOLERANCE] = ideal
    return coords


def p1_structure_like_cifparser(
    lattice: Lattice, symbols: list[str], labels: list[str], coords: np.ndarray
) -> Structure:
    """The structure ``CifParser`` builds from a simple P1 block with these (snapped) sites.

    Only for the simple case the caller has checked: identity operation only, full occupancy,
    plain element symbols, no two sites within :data:`CIFPARSER_SITE_TOLERANCE`.
    """
    order = _cifparser_site_order(symbols)
    wrapped = coords - np.floor(coords)  # CifParser wraps with x - floor(x)
    return Structure(
        lattice,
        [symbols[i] for i in order],
        wrapped[order],
        labels=[labels[i] for i in order],
    )


_COMPOSITIONS: dict[str, Composition] = {}
_ELECTRONEGATIVITY: dict[str, float] = {}


def _site_key(symbol: str) -> tuple[Composition, float]:
    if symbol not in _COMPOSITIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # noble gases: "no Pauling electronegativity"
            _COMPOSITIONS[symbol] = Composition({Element(symbol): 1.0})
            _ELECTRONEGATIVITY[symbol] = Element(symbol).X
    return _COMPOSITIONS[symbol], _ELECTRONEGATIVITY[symbol]


def _cifparser_site_order(symbols: list[str]) -> list[int]:
    """Site order of CifParser: grouped by composition, then ``Structure.get_sorted_structure``.

    Both sorts are stable; the second compares electronegativity then the species string,
    exactly as ``Site.__lt__`` does (NaN electronegativity included), so ties resolve alike.
    """
    distinct = list(dict.fromkeys(symbols))
    group_rank = {s: rank for rank, s in enumerate(sorted(distinct, key=lambda s: _site_key(s)[0]))}
    grouped = sorted(range(len(symbols)), key=lambda i: group_rank[symbols[i]])

    def site_cmp(i: int, j: int) -> int:
        first, second = symbols[i], symbols[j]
        return -1 if _site_lt(first, second) else int(_site_lt(second, first))

    return sorted(grouped, key=cmp_to_key(site_cmp))


def _site_lt(first: str, second: str) -> bool:
    x_first, x_second = _site_key(first)[1], _site_key(second)[1]
    if x_first < x_second:
        return True
    if x_first > x_second:
        return False
    return first < second
