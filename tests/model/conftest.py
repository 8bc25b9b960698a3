"""Fixtures of the model tests (helpers live in ``model_helpers.py``)."""

from __future__ import annotations

import pytest
from model_helpers import PEROVSKITES


@pytest.fixture(scope="session")
def perovskite_records():
    """The first 8 crystals of the perov_5 validation CSV (id, pymatgen Structure)."""
    from evaluation.io.crystals import read_crystals

    if not PEROVSKITES.is_file():
        pytest.skip(f"{PEROVSKITES} is not available")
    records = read_crystals(PEROVSKITES, limit=8).records[:8]
    assert len(records) == 8
    return [(record.id, record.structure) for record in records]


@pytest.fixture(scope="session")
def perovskite_tensors(perovskite_records):
    from model.structures import structures_to_tensors

    return structures_to_tensors(perovskite_records, max_atoms=20).tensors
