"""The ``crystalforge`` command line with GPAW relaxations of Al3Si made to fail.

A worker subprocess cannot be monkeypatched from the test, so this entry point patches, then
runs the CLI with its arguments: ``python failing_gpaw_cli.py worker rapidfire ...``.
"""

from __future__ import annotations

import sys

from flows.dft.gpaw import GpawRelaxMaker
from flows.dft.schema import DFTTaskError

run_once = GpawRelaxMaker._run_once


def al3si_fails(self, structure, settings):
    if structure.composition.reduced_formula == "Al3Si":
        raise DFTTaskError("GPAW relax exploded (test)")
    return run_once(self, structure, settings)


GpawRelaxMaker._run_once = al3si_fails

from pipeline.cli import app  # noqa: E402

app(sys.argv[1:], prog_name="crystalforge")
