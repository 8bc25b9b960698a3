"""The only places that use a library's private API, one module per library.

Each private use stays here for a measured reason (the module docstring gives the figures),
behind a version guard: :class:`VerifiedRange` names the installed versions the shortcut was
checked on, and outside them the caller takes the library's public path (same results, slower)
after one logged warning. ``tests/evaluation/test_compat_shortcuts.py`` compares each
shortcut with its public path on real structures.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedRange:
    """The versions of one distribution a private shortcut was verified on (both inclusive).

    Attributes
    ----------
    distribution
        The distribution that ships the module used (``pymatgen-core``, ``chgnet``, ...).
    lowest, highest
        The oldest and newest version the shortcut was compared with the public path on.
    """

    distribution: str
    lowest: str
    highest: str

    def installed(self) -> str | None:
        """The installed version, or ``None`` when the distribution is not installed."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def mismatch(self) -> str | None:
        """Why the installed version is outside the range, or ``None`` when it is inside."""
        installed = self.installed()
        if installed is None:
            return f"{self.distribution} is not installed"
        try:
            inside = Version(self.lowest) <= Version(installed) <= Version(self.highest)
        except InvalidVersion:
            inside = False
        if inside:
            return None
        return (
            f"{self.distribution} {installed} is outside the verified range "
            f"{self.lowest}..{self.highest}"
        )


@functools.cache
def shortcut_allowed(verified: VerifiedRange, shortcut: str) -> bool:
    """Whether ``shortcut`` may run on the installed library; warns once when it may not.

    Parameters
    ----------
    verified
        The range the shortcut was verified on.
    shortcut
        What the shortcut is, for the message (``"StructureMatcher._match"``).
    """
    reason = verified.mismatch()
    if reason is not None:
        logger.warning("%s: %s; using the public path instead (slower)", shortcut, reason)
    return reason is None
