"""Random structure search (RSS): the paper's AIRSS baseline, rebuilt on pyxtal.

The paper (Appendix D.4.1) proposes crystals with ``airss`` without relaxation, using
``MINSEP = 0.7-3`` Å and ``SYMMOPS = 2-4``, and draws the number of atoms per cell from three
ranges of equal weight (ternary 3–9/10–15/16–20, quaternary 4–10/11–15/16–20, quinary
5–11/12–16/17–20). Each candidate here is one such draw:

1. pick one of the arity's atom-count ranges uniformly, then a total atom count ``n`` in it;
2. pick a composition of ``n`` atoms with at least one atom of every element, uniformly among
   all such compositions;
3. pick a space group uniformly among those whose point group has ``SYMMOPS`` operations and
   whose Wyckoff positions can host that composition (pyxtal ``Group.check_compatible``);
4. pick the minimum separations: ``MINSEP_ij = clamp(f * (r_i + r_j), *minsep)`` with ``r`` the
   covalent radii of Cordero et al. (2008) and one scale ``f ~ U(minsep_scale)`` per draw, so
   the separations stay within AIRSS's 0.7–3 Å and follow the atoms' sizes. The default
   ``f`` range, 0.5–0.8, is what pyxtal fills quickly at its volume estimate: with ``f`` up to
   0.9, 64 candidates took 2–8x longer (a failed draw costs pyxtal up to ~30 s);
5. let pyxtal place the atoms (``from_random`` with that tolerance matrix and a volume factor
   ``~ U(volume_factor)``), then check every distance against ``MINSEP_ij`` ourselves.
   pyxtal tries up to 40 lattices per call; a draw that places its atoms at all does so in the
   first few (measured on Bi-Cu-Pb-S with a second round's tuned MINSEP: capping at 4 changed
   one of 12 candidates' attempt counts), while a doomed draw spent ~20 s on the other 36.
   ``lattice_attempts`` (default 5) caps it, a count and not a clock, so draws stay
   reproducible on any machine.

A draw that fails at any step is thrown away and the candidate drawn again (all of it: atom
count, composition, group, separations), up to ``max_attempts_per_candidate`` times; a candidate
still missing then is reported in ``failures``, not raised. Each candidate has its own random
stream, seeded from ``(seed, index)``, so candidate ``i`` is the same whatever
``n_candidates`` is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from importlib.metadata import version
from itertools import combinations_with_replacement
from typing import Any, NamedTuple

import numpy as np
from ase.data import atomic_numbers, covalent_radii
from pymatgen.core import Structure

from evaluation.records import CrystalRecord
from flows.generators.chemsys import parse_chemsys, require_arity

__all__ = [
    "ATOM_COUNT_RANGES",
    "RSSResult",
    "atom_count_ranges",
    "generate_rss",
    "point_group_order",
    "space_groups_with_symmops",
    "tuned_minsep",
]

#: Atoms-per-cell ranges by number of elements, each drawn with equal weight. Ternary to quinary
#: are the paper's; the others continue its pattern (the lowest range starts at one atom per
#: element and is seven wide, the cell never exceeds 20 atoms).
ATOM_COUNT_RANGES: dict[int, tuple[tuple[int, int], ...]] = {
    2: ((2, 6), (7, 12), (13, 20)),
    3: ((3, 9), (10, 15), (16, 20)),
    4: ((4, 10), (11, 15), (16, 20)),
    5: ((5, 11), (12, 16), (17, 20)),
    6: ((6, 12), (13, 16), (17, 20)),
    7: ((7, 13), (14, 17), (18, 20)),
    8: ((8, 14), (15, 17), (18, 20)),
}
#: Order of the point group (rotations of the crystal class) for each range of space-group
#: numbers: the 32 crystal classes in International Tables order.
_POINT_GROUP_ORDERS = (
    (1, 1, 1), (2, 2, 2), (3, 9, 2), (10, 15, 4), (16, 46, 4), (47, 74, 8),
    (75, 82, 4), (83, 88, 8), (89, 122, 8), (123, 142, 16), (143, 146, 3), (147, 148, 6),
    (149, 161, 6), (162, 167, 12), (168, 174, 6), (175, 176, 12), (177, 190, 12),
    (191, 194, 24), (195, 199, 12), (200, 206, 24), (207, 220, 24), (221, 230, 48),
)  # fmt: skip
#: Distances are compared with this slack (Å): pyxtal projects points onto Wyckoff positions.
_DISTANCE_SLACK = 1e-6
#: Lattices pyxtal tries per draw (its own default: 40); see the module docstring.
LATTICE_ATTEMPTS = 5


class RSSResult(NamedTuple):
    """What :func:`generate_rss` returns; unpacks as ``records, failures``."""

    records: list[CrystalRecord]
    #: One line per candidate that could not be made: ``"rss-<seed>-<index>: <why>"``.
    failures: list[str]


def point_group_order(space_group: int) -> int:
    """Number of point-group operations of a space group (``1`` for P1, ``48`` for Fm-3m)."""
    for first, last, order in _POINT_GROUP_ORDERS:
        if first <= space_group <= last:
            return order
    raise ValueError(f"space group number must be 1-230, got {space_group}")


def space_groups_with_symmops(minimum: int, maximum: int) -> tuple[int, ...]:
    """Space-group numbers whose point group has ``minimum``–``maximum`` operations.

    ``(2, 4)``, AIRSS's ``SYMMOPS=2-4``, gives the 57 triclinic P-1, monoclinic,
    orthorhombic 222/mm2, tetragonal 4/-4 and trigonal 3 groups.
    """
    return tuple(n for n in range(1, 231) if minimum <= point_group_order(n) <= maximum)


def atom_count_ranges(n_elements: int) -> tuple[tuple[int, int], ...]:
    """The atoms-per-cell ranges RSS draws from for a system of ``n_elements`` elements."""
    if n_elements not in ATOM_COUNT_RANGES:
        raise ValueError(f"RSS supports 2-8 elements, got {n_elements}")
    return ATOM_COUNT_RANGES[n_elements]


@cache
def _group(space_group: int) -> Any:
    from pyxtal.symmetry import Group

    return Group(space_group)


@lru_cache(maxsize=4096)
def _hosting_groups(counts: tuple[int, ...], groups: tuple[int, ...]) -> tuple[int, ...]:
    """The groups whose Wyckoff positions can hold ``counts`` atoms of each element."""
    return tuple(n for n in groups if _group(n).check_compatible(list(counts))[0])


def _random_composition(rng: np.random.Generator, n_atoms: int, n_elements: int) -> list[int]:
    """``n_atoms`` split into ``n_elements`` positive counts, uniformly over all such splits."""
    cuts = np.sort(rng.choice(np.arange(1, n_atoms), size=n_elements - 1, replace=False))
    return np.diff([0, *cuts.tolist(), n_atoms]).astype(int).tolist()


def _minsep_table(
    elements: tuple[str, ...],
    scale: float,
    bounds: tuple[float, float],
    tuned: Mapping[str, float] | None = None,
) -> dict[tuple[str, str], float]:
    """``MINSEP_ij = clamp(scale * (r_i + r_j), *bounds)`` for every pair of elements, or the
    ``tuned`` value of the pair (``"A-B"``, sorted symbols) where it has one."""
    radius = {el: float(covalent_radii[atomic_numbers[el]]) for el in elements}
    tuned = tuned or {}
    table = {}
    for a, b in combinations_with_replacement(sorted(elements), 2):
        value = tuned.get(f"{a}-{b}", scale * (radius[a] + radius[b]))
        table[(a, b)] = float(np.clip(value, *bounds))
    return table


def tuned_minsep(
    relaxed: Sequence[Structure], bounds: tuple[float, float] = (0.7, 3.0)
) -> dict[str, float]:
    """AIRSS's second-round MINSEP: for every pair of elements, the shortest distance between
    them in ``relaxed`` (the first round's lowest-energy relaxed structures), clamped to
    ``bounds``; keyed ``"A-B"`` with sorted symbols. Pairs never within 3 Å are left out (the
    first round's rule stays for them).

    Raises
    ------
    ValueError
        When ``relaxed`` is empty.
    """
    if not relaxed:
        raise ValueError("no relaxed structures to tune MINSEP from")
    shortest: dict[str, float] = {}
    for structure in relaxed:
        centres, neighbours, _, distances = structure.get_neighbor_list(
            bounds[1], exclude_self=True
        )
        symbols = [site.specie.symbol for site in structure]
        for centre, neighbour, distance in zip(centres, neighbours, distances, strict=True):
            pair = "-".join(sorted((symbols[centre], symbols[neighbour])))
            shortest[pair] = min(shortest.get(pair, math.inf), float(distance))
    return {pair: float(np.clip(d, *bounds)) for pair, d in sorted(shortest.items())}


def _separations_respected(structure: Structure, table: dict[tuple[str, str], float]) -> bool:
    """Every pair of atoms (periodic images included) at least its ``MINSEP_ij`` apart."""
    reach = max(table.values())
    centres, neighbours, _, distances = structure.get_neighbor_list(reach, exclude_self=True)
    symbols = [site.specie.symbol for site in structure]
    for centre, neighbour, distance in zip(centres, neighbours, distances, strict=True):
        pair = tuple(sorted((symbols[centre], symbols[neighbour])))
        if distance < table[pair] - _DISTANCE_SLACK:
            return False
    return True


@contextmanager
def _lattice_attempts_capped(limit: int) -> Iterator[None]:
    """pyxtal's ``random_crystal`` tries at most ``limit`` lattices while inside.

    pyxtal (1.1) sets ``self.lattice_attempts = 40`` in ``set_crystal`` and loops over it; it
    has no argument for it. A class property whose setter clamps the value caps the loop
    without copying pyxtal's code; ``tests/flows/test_rss.py`` checks it still takes.
    """
    from pyxtal.crystal import random_crystal

    if "lattice_attempts" in vars(random_crystal):  # already capped (a nested call)
        yield
        return

    def read(self: Any) -> int:
        return self.__dict__.get("lattice_attempts", limit)

    def write(self: Any, value: int) -> None:  # the instance keeps the capped value
        self.__dict__["lattice_attempts"] = min(value, limit)

    random_crystal.lattice_attempts = property(read, write)
    try:
        yield
    finally:
        del random_crystal.lattice_attempts


@contextmanager
def _image_check_tolerance_shared() -> Iterator[None]:
    """pyxtal's Wyckoff merging checks periodic images with one shared default tolerance
    matrix while inside, instead of building a new one per call.

    pyxtal (1.1) calls ``check_images(..., tol=tol)`` from ``symmetry.Wyckoff_position.merge``
    without ``tm``, and ``check_images`` then builds ``Tol_matrix(prototype="atomic")`` (a
    ~100 x 100 matrix in Python loops) that the given ``tol`` makes unused: 47 % of a
    Bi-Cu-Pb-S round-2 draw (profiled). Passing the matrix changes nothing the check returns,
    so draws stay identical; ``tests/flows/test_generators.py`` checks both.
    """
    import pyxtal.symmetry as symmetry
    from pyxtal.operations import check_images
    from pyxtal.tolerance import Tol_matrix

    if symmetry.check_images is not check_images:  # already shared (a nested call)
        yield
        return
    default = Tol_matrix(prototype="atomic")

    def shared(*args: Any, tm: Any = None, **kwargs: Any) -> bool:
        return check_images(*args, tm=default if tm is None else tm, **kwargs)

    symmetry.check_images = shared
    try:
        yield
    finally:
        symmetry.check_images = check_images


def _draw_structure(
    rng: np.random.Generator,
    elements: tuple[str, ...],
    count_ranges: tuple[tuple[int, int], ...],
    groups: tuple[int, ...],
    minsep: tuple[float, float],
    minsep_scale: tuple[float, float],
    volume_factor: tuple[float, float],
    pair_minsep: Mapping[str, float] | None = None,
) -> tuple[Structure, dict[str, Any]] | str:
    """One AIRSS-style draw: a structure and how it was drawn, or why the draw failed."""
    from pyxtal import pyxtal
    from pyxtal.tolerance import Tol_matrix

    low, high = count_ranges[int(rng.integers(len(count_ranges)))]
    n_atoms = int(rng.integers(low, high + 1))
    counts = _random_composition(rng, n_atoms, len(elements))
    hosts = _hosting_groups(tuple(counts), groups)
    formula = "".join(f"{el}{c}" for el, c in zip(elements, counts, strict=True))
    if not hosts:
        return f"no space group with the requested SYMMOPS can host {formula}"
    space_group = int(rng.choice(hosts))
    scale = float(rng.uniform(*minsep_scale))
    factor = float(rng.uniform(*volume_factor))
    pyxtal_seed = int(rng.integers(2**32))
    table = _minsep_table(elements, scale, minsep, pair_minsep)

    crystal = pyxtal()
    tolerances = Tol_matrix(*((a, b, d) for (a, b), d in table.items()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyxtal warns on every volume increase
            crystal.from_random(
                3,
                space_group,
                list(elements),
                counts,
                factor=factor,
                tm=tolerances,
                random_state=pyxtal_seed,
                max_count=1,  # our own attempt loop redraws everything instead
            )
    except Exception as error:  # pyxtal raises RuntimeError, ValueError, ... on bad draws
        return f"pyxtal could not build {formula} in group {space_group} ({error})"
    if not crystal.valid:
        return f"pyxtal could not build {formula} in group {space_group}"
    structure = crystal.to_pymatgen()
    if len(structure) != n_atoms or structure.composition.chemical_system != "-".join(elements):
        return f"pyxtal returned {structure.composition.formula} for {formula}"
    if not _separations_respected(structure, table):
        return f"{formula} in group {space_group} violates the minimum separations"
    provenance = {
        "space_group": space_group,
        "point_group_order": point_group_order(space_group),
        "n_atoms": n_atoms,
        "minsep": min(table.values()),
        "minsep_pairs": {f"{a}-{b}": d for (a, b), d in table.items()},
        "composition": dict(zip(elements, counts, strict=True)),
        "atoms_per_cell_range": [low, high],
        "minsep_scale": scale,
        "volume_factor": factor,
        "pyxtal_seed": pyxtal_seed,
    }
    return structure, provenance


def generate_rss(
    chemsys: str | Sequence[str],
    n_candidates: int,
    *,
    seed: int,
    atoms_per_cell: tuple[int, int] | None = None,
    symmops: tuple[int, int] = (2, 4),
    minsep: tuple[float, float] = (0.7, 3.0),
    minsep_scale: tuple[float, float] = (0.5, 0.8),
    volume_factor: tuple[float, float] = (1.0, 1.3),
    max_attempts_per_candidate: int = 20,
    pair_minsep: Mapping[str, float] | None = None,
    lattice_attempts: int = LATTICE_ATTEMPTS,
) -> RSSResult:
    """Random symmetric crystals of a chemical system, AIRSS style (see the module docstring).

    Parameters
    ----------
    chemsys
        ``"Li-Co-O"`` or a sequence of element symbols; at least two elements.
    n_candidates
        Candidates to draw; each is ``rss-<seed>-<index>``.
    seed
        Non-negative; candidate ``index`` uses the random stream seeded by ``(seed, index)``.
    atoms_per_cell
        ``(low, high)`` atoms per cell instead of the arity's three ranges.
    symmops
        Allowed numbers of point-group operations (AIRSS ``SYMMOPS``).
    minsep
        Bounds (Å) of every pair's minimum separation (AIRSS ``MINSEP``).
    minsep_scale
        Range of the per-draw factor ``f`` in ``MINSEP_ij = f * (r_i + r_j)``.
    volume_factor
        Range of pyxtal's volume factor (cell volume relative to its atomic-volume estimate).
    max_attempts_per_candidate
        Draws per candidate before it is given up and reported as a failure.
    pair_minsep
        Tuned MINSEP per pair (``"A-B"``, sorted symbols; :func:`tuned_minsep`, the paper's
        second round): used as is for those pairs, clamped to ``minsep``.
    lattice_attempts
        Lattices pyxtal tries per draw before the draw counts as failed (pyxtal's own: 40).

    Returns
    -------
    RSSResult
        ``records`` (source ``"rss"``, properties = provenance: generator, seed, index,
        space_group, n_atoms, minsep, params) and ``failures`` (one line per missing candidate).
    """
    elements = parse_chemsys(chemsys if isinstance(chemsys, str) else "-".join(chemsys))
    require_arity(elements, 2, "rss")
    count_ranges = _checked_count_ranges(elements, atoms_per_cell)
    _check_arguments(n_candidates, seed, symmops, minsep, minsep_scale, volume_factor)
    if max_attempts_per_candidate < 1:
        raise ValueError(
            f"max_attempts_per_candidate must be at least 1, got {max_attempts_per_candidate}"
        )
    if lattice_attempts < 1:
        raise ValueError(f"lattice_attempts must be at least 1, got {lattice_attempts}")
    groups = space_groups_with_symmops(*symmops)
    if not groups:
        raise ValueError(
            f"no space group has a point group of {symmops[0]}-{symmops[1]} operations"
        )
    params = {
        "chemsys": "-".join(elements),
        "atoms_per_cell_ranges": [list(r) for r in count_ranges],
        "symmops": list(symmops),
        "minsep_bounds": list(minsep),
        "minsep_scale_range": list(minsep_scale),
        "volume_factor_range": list(volume_factor),
        "pyxtal_version": version("pyxtal"),
        "pyxtal_lattice_attempts": lattice_attempts,
        **({"tuned_minsep": dict(pair_minsep)} if pair_minsep else {}),
    }

    records: list[CrystalRecord] = []
    failures: list[str] = []
    with _lattice_attempts_capped(lattice_attempts), _image_check_tolerance_shared():
        for index in range(n_candidates):
            record_id = f"rss-{seed}-{index}"
            rng = np.random.default_rng([seed, index])
            reason = "no attempt made"
            for attempt in range(1, max_attempts_per_candidate + 1):
                drawn = _draw_structure(
                    rng, elements, count_ranges, groups, minsep, minsep_scale, volume_factor,
                    pair_minsep,
                )  # fmt: skip
                if isinstance(drawn, str):
                    reason = drawn
                    continue
                structure, provenance = drawn
                properties = {"generator": "rss", "seed": seed, "index": index, **provenance}
                properties["params"] = {**params, "attempt": attempt}
                records.append(CrystalRecord(structure, record_id, "rss", properties))
                break
            else:
                failures.append(
                    f"{record_id}: no structure in {max_attempts_per_candidate} attempts "
                    f"(last: {reason})"
                )
    return RSSResult(records, failures)


def _checked_count_ranges(
    elements: tuple[str, ...], atoms_per_cell: tuple[int, int] | None
) -> tuple[tuple[int, int], ...]:
    if atoms_per_cell is None:
        return atom_count_ranges(len(elements))
    low, high = (int(n) for n in atoms_per_cell)
    if low < len(elements) or high < low:
        raise ValueError(
            f"atoms_per_cell must be (low, high) with {len(elements)} <= low <= high for "
            f"{'-'.join(elements)} (one atom per element at least), got {tuple(atoms_per_cell)}"
        )
    return ((low, high),)


def _check_arguments(
    n_candidates: int,
    seed: int,
    symmops: tuple[int, int],
    minsep: tuple[float, float],
    minsep_scale: tuple[float, float],
    volume_factor: tuple[float, float],
) -> None:
    if n_candidates < 0:
        raise ValueError(f"n_candidates must be non-negative, got {n_candidates}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 1 <= symmops[0] <= symmops[1] <= 48:
        raise ValueError(f"symmops must be (low, high) with 1 <= low <= high <= 48, got {symmops}")
    for name, (low, high) in (
        ("minsep", minsep),
        ("minsep_scale", minsep_scale),
        ("volume_factor", volume_factor),
    ):
        if not 0 < low <= high:
            raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
