"""The only places the pipeline reaches into a library's internals or patches it, one module
per library (:mod:`.fireworks`, :mod:`.jobflow`, :mod:`.maggma`, :mod:`.mongomock`, :mod:`.typer`).

Each stays for a reason stock library API cannot serve (the module docstring says which) and
checks the installed version against the range it was verified on
(:class:`evaluation.compat.VerifiedRange`); outside it, it raises :class:`UnverifiedLibrary`
with a clear message rather than patching a library it was not checked on.
"""

from __future__ import annotations

from evaluation.compat import VerifiedRange


class UnverifiedLibrary(RuntimeError):  # noqa: N818 - reads as the condition it reports
    """An installed library is outside the versions a patch of it was verified on."""


def require(verified: VerifiedRange, patch: str) -> None:
    """Raise :class:`UnverifiedLibrary` unless the installed version is in ``verified``.

    Parameters
    ----------
    verified
        The versions ``patch`` was verified on.
    patch
        What needs them, for the message.
    """
    reason = verified.mismatch()
    if reason is not None:
        raise UnverifiedLibrary(
            f"{patch} needs {verified.distribution} {verified.lowest}..{verified.highest}: "
            f"{reason} (pin it, or verify the patch and widen the range in pipeline/compat)"
        )
