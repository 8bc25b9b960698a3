"""Fixtures shared across the test packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

#: The shared perov_5 validation split (MP-20-style CSV: a ``cif`` column plus properties).
PEROV_5_VAL = Path(__file__).resolve().parents[1].parent / "shared/data/structures/perov_5/val.csv"


def l10_cuau() -> Structure:
    """CuAu in its L1_0 (tetragonal) structure: the known Au-Cu phase of the campaign tests."""
    return Structure(Lattice.tetragonal(2.85, 3.70), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def l12(a: float, corner: str, face: str) -> Structure:
    """An L1_2 (Cu3Au-type) cubic cell: ``corner`` at the origin, ``face`` on the faces."""
    positions = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Structure(Lattice.cubic(a), [corner, face, face, face], positions)


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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of ``configs/model/tiny.yaml`` trained for 300 steps on 32 perovskites
    (a few seconds on one CPU core); shared by every test of the model's commands."""
    from evaluation.io.crystals import read_crystals
    from evaluation.paths import PROJECT_ROOT
    from model.config import load_model_config
    from model.structures import structures_to_tensors
    from model.train import train

    records = read_crystals(PEROV_5_VAL, limit=32).records
    tensors = structures_to_tensors(
        ((record.label, record.structure) for record in records), max_atoms=20
    ).tensors
    out = tmp_path_factory.mktemp("tiny-checkpoint")
    config = load_model_config(PROJECT_ROOT / "configs" / "model" / "tiny.yaml")
    result = train(config, tensors, out, max_steps=300, device="cpu", log=lambda _: None)
    return result.last_checkpoint
