"""The ``crystalforge`` command line (console script ``pipeline.cli:main``).

One module per command group (:mod:`~pipeline.cli.campaign`, :mod:`~pipeline.cli.results`,
:mod:`~pipeline.cli.model`, :mod:`~pipeline.cli.evaluate`, :mod:`~pipeline.cli.relax`,
:mod:`~pipeline.cli.data`, :mod:`~pipeline.cli.dft`, :mod:`~pipeline.cli.worker`), what they
share in :mod:`~pipeline.cli.common`, and the tree assembled in :mod:`~pipeline.cli.app`. Every
command turns bad input into one ``error:`` line on stderr and exit code 2; importing changes
nothing.
"""

from pipeline.cli.app import app, main

__all__ = ["app", "main"]
