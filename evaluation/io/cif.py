"""CIF text to pymatgen Structures, quickly and without flooding stderr with warnings.

pymatgen's ``CifParser`` understands every CIF dialect but spends 1-5 ms per structure in
symmetry expansion and site-merging searches that a P1 CIF does not need. Most CIFs in
machine-learning data sets are P1 (only the identity operation, fully occupied sites: what
pymatgen, ASE and the MP/Alexandria/JARVIS exports write). For such a block we build the
``Structure`` directly, reproducing ``CifParser`` exactly (same lattice construction, wrapped
coordinates, labels and site order); every other block goes through ``CifParser`` itself.
The part that clones ``CifParser`` lives in :mod:`evaluation.compat.pymatgen`, behind its
version guard: outside the verified pymatgen versions every block goes through ``CifParser``.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.cif import CifBlock, CifParser, str2float

from evaluation.compat.pymatgen import (
    CIFPARSER_SITE_TOLERANCE,
    cifparser_clone_allowed,
    p1_structure_like_cifparser,
    snap_like_cifparser,
)

logger = logging.getLogger(__name__)

#: Above this many sites the pairwise-distance check would cost more than CifParser itself.
_MAX_FAST_SITES = 1000
#: Element symbols the fast path accepts; D and T are left to CifParser, which maps them to H.
_PLAIN_ELEMENTS = {element.symbol for element in Element} - {"D", "T"}
_MAGNETIC_PREFIXES = ("_space_group_magn", "_atom_site_moment", "_space_group_symop_magn")
_BLOCK_START = re.compile(r"^\s*data_", flags=re.MULTILINE)


class UnusableCrystalError(ValueError):
    """A CIF block that parses but describes no usable crystal (the message says why)."""


@dataclass
class CifBlockResult:
    """The outcome of parsing one ``data_`` block: a structure or the reason there is none."""

    name: str
    structure: Structure | None
    error: str | None = None


def split_cif_blocks(text: str) -> list[str]:
    """Split CIF text into the text of its ``data_`` blocks (powder-pattern blocks dropped).

    Splitting ourselves (``CifFile`` merges blocks that share a name) keeps every block and
    lets one bad block fail alone.
    """
    parts = _BLOCK_START.split(f"x\n{text}")[1:]
    return [f"data_{part}" for part in parts if "powder_pattern" not in part.split("\n", 1)[0]]


def parse_cif_text(text: str) -> list[CifBlockResult]:
    """Parse every ``data_`` block of a CIF; an empty list means the text has no block."""
    results = []
    for block_text in split_cif_blocks(text):
        name = block_text[5:].split(maxsplit=1)[0] if block_text[5:].strip() else ""
        try:
            results.append(CifBlockResult(name, parse_cif_block(block_text)))
        except Exception as exc:  # noqa: BLE001 - any parser failure is a per-block problem
            results.append(CifBlockResult(name, None, describe_cif_error(exc)))
    return results


def parse_cif_block(block_text: str) -> Structure:
    """Parse the text of one ``data_`` block (fast path when it is P1, else ``CifParser``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        structure = _p1_structure(CifBlock.from_str(block_text))
        if structure is None:
            parser = CifParser.from_str(block_text)
            structure = parser.parse_structures(primitive=False, on_error="raise")[0]
    for warning in caught:
        logger.debug("CIF warning: %s", warning.message)
    return structure


def describe_cif_error(exc: Exception) -> str:
    """A one-line reason for a CIF block that could not be parsed."""
    if isinstance(exc, UnusableCrystalError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"CIF block lacks the field {exc.args[0]!r}"
    message = str(exc).strip()
    # CifParser wraps the real cause as "No structure parsed for section 1 in CIF.\n<cause>".
    if message.startswith("No structure parsed") and "\n" in message:
        message = message.split("\n", 1)[1].strip()
    if re.fullmatch(r"'_[\w.\-]+'", message):  # a KeyError CifParser re-raised as ValueError
        return f"CIF block lacks the field {message}"
    if message == "Singular matrix":
        return "zero-volume (degenerate) cell"
    if message.startswith("Invalid CIF file with no structures"):
        return "no atom sites in the CIF block"
    first_line = message.splitlines()[0] if message else type(exc).__name__
    return f"unparsable CIF ({first_line[:200]})"


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return str2float(text)  # handles uncertainties such as "0.1234(5)"


def _is_identity_only(operations: str | list[str] | None) -> bool:
    if operations is None:
        return False
    if isinstance(operations, str):
        operations = [operations]
    return [op.replace(" ", "").replace("'", "").lower() for op in operations] == ["x,y,z"]


def _p1_structure(block: CifBlock) -> Structure | None:
    """The structure of a simple P1 block exactly as CifParser builds it, or None.

    Returns None (the caller falls back to CifParser) for anything but the simple case: other
    symmetry operations, oxidation states, partial occupancy, magnetic CIFs, coincident sites
    (which CifParser merges), missing fields. Raises :class:`UnusableCrystalError`, with the
    reason, for a block that is simple but geometrically unusable.
    """
    if not cifparser_clone_allowed():
        return None
    data = block.data
    operations = data.get(
        "_symmetry_equiv_pos_as_xyz", data.get("_space_group_symop_operation_xyz")
    )
    if not _is_identity_only(operations):
        return None
    if "_atom_type_oxidation_number" in data or any(
        key.startswith(_MAGNETIC_PREFIXES) for key in data
    ):
        return None
    try:
        symbols = data["_atom_site_type_symbol"]
        labels = data["_atom_site_label"]
        columns = [data[f"_atom_site_fract_{axis}"] for axis in "xyz"]
        cell = [data[f"_cell_length_{axis}"] for axis in "abc"]
        cell += [data[f"_cell_angle_{angle}"] for angle in ("alpha", "beta", "gamma")]
    except KeyError:
        return None
    if isinstance(symbols, str) or not 0 < len(symbols) <= _MAX_FAST_SITES:
        return None
    if any(len(column) != len(symbols) for column in [labels, *columns]):
        return None
    if not all(symbol in _PLAIN_ELEMENTS for symbol in symbols):
        return None
    occupancies = data.get("_atom_site_occupancy")
    try:
        if occupancies is not None and any(_to_float(occu) != 1.0 for occu in occupancies):
            return None
        coords = np.array([[_to_float(v) for v in column] for column in columns]).T
        lengths_angles = [_to_float(v) for v in cell]
    except (ValueError, TypeError):
        return None

    if not np.isfinite(coords).all():
        raise UnusableCrystalError("non-finite atomic coordinate (NaN or inf)")
    coords = snap_like_cifparser(coords)  # before the checks, as CifParser snaps first
    with np.errstate(all="ignore"):
        lattice = Lattice.from_parameters(*lengths_angles)
    if not np.isfinite(lattice.matrix).all() or abs(np.linalg.det(lattice.matrix)) < 1e-8:
        a, b, c, alpha, beta, gamma = lengths_angles
        raise UnusableCrystalError(
            f"zero-volume (degenerate) cell: a={a:g} b={b:g} c={c:g} "
            f"alpha={alpha:g} beta={beta:g} gamma={gamma:g}"
        )
    # CifParser merges sites closer than its tolerance; leave that case to it.
    delta = coords[:, None, :] - coords[None, :, :]
    delta -= np.round(delta)
    coincident = np.all(np.abs(delta) < CIFPARSER_SITE_TOLERANCE, axis=-1)
    np.fill_diagonal(coincident, val=False)
    if coincident.any():
        return None

    return p1_structure_like_cifparser(lattice, symbols, labels, coords)
