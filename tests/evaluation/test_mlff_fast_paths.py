"""The relaxation's fast paths give what the library paths they replace give.

``CHGNetInferenceCalculator`` (one backward pass) against chgnet's ``CHGNetCalculator``, and the
caching ``_FrechetCellFilter`` against ASE's ``FrechetCellFilter``.
"""

from __future__ import annotations

import contextlib
import io
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Lattice, Structure

from evaluation.relax.calculators import CHGNetInferenceCalculator, load_calculator
from evaluation.relax.engine import _FrechetCellFilter, _to_atoms

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _structures() -> list[Structure]:
    si = Structure(Lattice.cubic(5.5), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    nacl = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    ).get_primitive_structure()
    lco = Structure(
        Lattice.from_parameters(2.9, 3.0, 14.0, 90, 92, 120),
        ["Li", "Co", "O", "O"],
        [[0, 0, 0.5], [0, 0, 0], [1 / 3, 2 / 3, 0.26], [2 / 3, 1 / 3, 0.74]],
    )
    return [s.perturb(0.1, seed=i) for i, s in enumerate([si, nacl, lco])]


def test_chgnet_inference_matches_chgnet_calculator() -> None:
    from chgnet.model.dynamics import CHGNetCalculator

    fast, tag = load_calculator("chgnet")
    assert isinstance(fast, CHGNetInferenceCalculator) and tag == "mlff:chgnet-0.3.0"
    with contextlib.redirect_stdout(io.StringIO()):
        reference = CHGNetCalculator(model=fast.model)
    for structure in _structures():
        ours, theirs = _to_atoms(structure), _to_atoms(structure)
        ours.calc, theirs.calc = fast, reference
        assert ours.get_potential_energy() == pytest.approx(theirs.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(ours.get_forces(), theirs.get_forces(), atol=2e-4)
        np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), atol=2e-5)  # eV/Å³
        assert np.abs(ours.get_stress()).max() > 1e-3  # a real stress was compared


def test_cached_filter_follows_the_same_path() -> None:
    calc, _ = load_calculator("chgnet")
    runs = []
    for cls in (FrechetCellFilter, _FrechetCellFilter):
        atoms = _to_atoms(_structures()[2])
        atoms.calc = calc
        opt = FIRE(cls(atoms), logfile=None)
        opt.run(fmax=0.05, steps=15)
        runs.append((opt.nsteps, atoms.get_potential_energy(), atoms.cell.array.copy()))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == pytest.approx(runs[1][1], abs=1e-6)
    np.testing.assert_allclose(runs[0][2], runs[1][2], atol=1e-8)
