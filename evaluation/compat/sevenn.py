"""Where SevenNet's shipped checkpoints are, without ever starting a download; sevenn 0.13.0.

sevenn's public ``util.pretrained_name_to_path`` downloads a checkpoint it cannot find, which
on an offline worker hangs until a network timeout. The file names live in the private
``sevenn._const``; reading them lets a missing checkpoint fail at once, in one line
(:class:`~evaluation.relax.calculators.MLFFUnavailable`). Outside the verified range the public
function is used (it returns the same path when the file is there).
``tests/evaluation/test_compat_shortcuts.py`` compares the two.
"""

from __future__ import annotations

from evaluation.compat import VerifiedRange, shortcut_allowed

VERIFIED = VerifiedRange("sevenn", "0.13.0", "0.13.0")

#: Our model names -> the constant in ``sevenn._const`` naming its shipped checkpoint.
SHIPPED_CONSTANTS = {"7net-0": "SEVENNET_0_11Jul2024", "7net-l3i5": "SEVENNET_l3i5"}


def shipped_checkpoint(model: str) -> str:
    """The path sevenn ships ``model``'s checkpoint at (``7net-0`` or ``7net-l3i5``); the file
    may be missing, which the caller checks."""
    if shortcut_allowed(VERIFIED, "sevenn._const"):
        from sevenn import _const

        return str(getattr(_const, SHIPPED_CONSTANTS[model]))
    from sevenn.util import pretrained_name_to_path  # pragma: no cover - other sevenn versions

    return pretrained_name_to_path(model)  # pragma: no cover
