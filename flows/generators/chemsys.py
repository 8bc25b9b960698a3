"""Chemical systems as the generators take them: ``"Li-Co-O"`` → ``("Co", "Li", "O")``."""

from __future__ import annotations

import re

from pymatgen.core.periodic_table import Element

__all__ = ["MAX_ELEMENTS", "check_element_symbol", "parse_chemsys", "require_arity"]

#: The largest system a generator is asked for (the paper goes up to quinaries).
MAX_ELEMENTS = 8
#: What an element symbol looks like: one capital letter, at most two lower-case ones.
_SYMBOL = re.compile(r"[A-Z][a-z]{0,2}")
#: Real elements only (some pymatgen versions also list placeholders such as ``D``).
_ELEMENTS = frozenset(Element.from_Z(z).symbol for z in range(1, 119))


def parse_chemsys(text: str) -> tuple[str, ...]:
    """Element symbols of a chemical system, sorted and unique.

    Parameters
    ----------
    text
        Symbols joined by ``-`` (``"Li-Co-O"``); spaces around symbols are ignored.

    Returns
    -------
    tuple[str, ...]
        The symbols in alphabetical order (``("Co", "Li", "O")``), as pymatgen's
        ``Composition.chemical_system`` orders them.

    Raises
    ------
    ValueError
        An empty part (``"Li--O"``), a token that is not an element symbol, an unknown element
        (``"Xx"``), a repeated element or more than :data:`MAX_ELEMENTS` elements; the message
        names the offending token and the whole input.
    """
    if not isinstance(text, str):
        raise ValueError(f"chemical system must be a string like 'Li-Co-O', got {text!r}")
    if not text.strip():
        raise ValueError("empty chemical system; expected element symbols joined by '-'")
    tokens = [token.strip() for token in text.split("-")]
    seen: set[str] = set()
    for position, token in enumerate(tokens, start=1):
        check_element_symbol(token, position, f"chemical system {text!r}")
        if token in seen:
            raise ValueError(f"element {token!r} appears twice in chemical system {text!r}")
        seen.add(token)
    if len(seen) > MAX_ELEMENTS:
        raise ValueError(
            f"chemical system {text!r} has {len(seen)} elements; at most {MAX_ELEMENTS} allowed"
        )
    return tuple(sorted(seen))


def check_element_symbol(token: str, position: int, where: str) -> None:
    """Raise a ``ValueError`` naming ``token``, its ``position`` and ``where`` it came from
    unless ``token`` is the symbol of a real element."""
    if not token:
        raise ValueError(f"empty element at position {position} in {where}")
    if not _SYMBOL.fullmatch(token):
        raise ValueError(
            f"{token!r} is not an element symbol in {where} (expected symbols such as 'Li')"
        )
    if token not in _ELEMENTS:
        raise ValueError(f"unknown element {token!r} in {where}")


def require_arity(elements: tuple[str, ...], minimum: int, generator_name: str) -> None:
    """Raise when a generator is given fewer elements than it can work with.

    >>> require_arity(("Li",), 2, "rss")
    Traceback (most recent call last):
    ...
    ValueError: the rss generator needs at least 2 elements, got 1 (Li)
    """
    if len(elements) < minimum:
        raise ValueError(
            f"the {generator_name} generator needs at least {minimum} elements, "
            f"got {len(elements)} ({'-'.join(elements) or 'none'})"
        )
