"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry


@pytest.fixture
def mp_style_feo_entry() -> Callable[..., ComputedStructureEntry]:
    """A factory of rock-salt FeO entries with Materials Project GGA+U run parameters."""

    def make(energy: float, entry_id: str = "feo-test") -> ComputedStructureEntry:
        structure = Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(4.3), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        )
        parameters = {
            "run_type": "GGA+U",
            "is_hubbard": True,
            "hubbards": {"Fe": 5.3, "O": 0.0},
            "potcar_spec": [
                {"titel": "PAW_PBE Fe_pv 06Sep2000", "hash": None},
                {"titel": "PAW_PBE O 08Apr2002", "hash": None},
            ],
        }
        return ComputedStructureEntry(structure, energy, parameters=parameters, entry_id=entry_id)

    return make
