"""Typer: the usage-error classes its app raises (verified on typer 0.29.2).

typer >= 0.20 vendors click as the private ``typer._click`` and exports neither ``UsageError``
nor ``NoArgsIsHelpError``; :func:`pipeline.cli.app.main` catches them to print click's usage
errors as one ``error:`` line. Older typer raises click's own classes, so outside the verified
range this falls back to ``click``. ``tests/pipeline/test_cli_errors.py`` checks the one-line
errors end to end.
"""

from __future__ import annotations

from types import ModuleType

from evaluation.compat import VerifiedRange, shortcut_allowed

VERIFIED = VerifiedRange("typer", "0.29.2", "0.29.2")


def click_exceptions() -> ModuleType:
    """The module holding the ``UsageError`` and ``NoArgsIsHelpError`` that typer raises."""
    if shortcut_allowed(VERIFIED, "typer._click"):
        from typer._click import exceptions

        return exceptions
    try:  # pragma: no cover - other typer versions
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - typer < 0.20 raises click's classes
        from click import exceptions
    return exceptions
