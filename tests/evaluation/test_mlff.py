"""MLFF calculators and relaxations (CHGNet, SevenNet): real models, small cells."""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.core import Lattice, Structure

import evaluation.hull.mlff_reference as mlff_reference
import evaluation.relax.engine as mlff
from evaluation.hull.core import EntryHullReference, LevelOfTheoryMismatch
from evaluation.hull.mlff_reference import mlff_elemental_energies, mlff_hull_reference
from evaluation.hull.mp_entries import mp_formation_energy_reference
from evaluation.records import CrystalRecord
from evaluation.relax.calculators import MLFFUnavailable, load_calculator
from evaluation.relax.engine import relax_structures, single_point

# CHGNet's own deprecation noise about tensors, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

DIAMOND = [
    [0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
    [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25],
]  # fmt: skip


def _si() -> Structure:
    return Structure(Lattice.cubic(5.6), ["Si"] * 8, DIAMOND)


def _nacl() -> Structure:
    fcc = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return fcc.get_primitive_structure()


def _rattled_cu() -> Structure:
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.7), ["Cu"], [[0, 0, 0]])
    return cu.perturb(0.1, min_distance=0.05, seed=0)


def _too_close() -> Structure:
    return Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.025, 0, 0]])  # 0.1 Å


def _nan() -> Structure:
    return Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [np.nan, 0.5, 0.5]])


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRYSTALFORGE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("model", ["chgnet", "7net-0"])
def test_relax_small_cells(model: str) -> None:
    inputs = [_si(), _nacl(), _rattled_cu()]
    start = time.perf_counter()
    results = relax_structures(inputs, model=model, fmax=0.05, progress=False)
    assert time.perf_counter() - start < 30
    for structure, result in zip(inputs, results, strict=True):
        assert result.status == "ok", result.reason
        assert result.converged and np.isfinite(result.energy)
        assert result.max_force <= 0.05
        assert result.energy_per_atom == pytest.approx(result.energy / len(structure))
        assert result.level_of_theory.startswith("mlff:")
        assert [str(s) for s in result.structure.species] == [str(s) for s in structure.species]
        assert result.trajectory.initial_energy >= result.energy - 1e-6
        json.dumps(result.to_dict())
    assert -6.0 < results[0].energy_per_atom < -4.5  # Si, eV/atom


def test_bad_inputs_fail_alone() -> None:
    results = relax_structures(
        [_too_close(), _si(), _nan(), _rattled_cu()], model="chgnet", progress=False
    )
    assert [r.status for r in results] == ["failed", "ok", "failed", "ok"]
    assert "0.10 Å apart" in results[0].reason
    assert "non-finite" in results[2].reason
    assert results[0].structure is None and results[0].energy is None


class _ToyCalculator(Calculator):
    """A toy force field that pulls every atom to the centroid with 0.2 eV/Å.

    ``mode="collapse"``: the atoms end up on top of each other. ``mode="sink"``: the energy
    also falls by 25 eV/atom at every call (as a broken model's would).
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode, self.calls = mode, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        offsets = self.atoms.positions - self.atoms.positions.mean(axis=0)
        norms = np.linalg.norm(offsets, axis=1, keepdims=True) + 1e-12
        energy = 0.2 * float(norms.sum())
        if self.mode == "sink":
            energy -= 25.0 * self.calls * len(self.atoms)
        self.results = {"energy": energy, "forces": -0.2 * offsets / norms, "stress": np.zeros(6)}


@pytest.mark.parametrize(("mode", "reason"), [("collapse", "apart"), ("sink", "below the start")])
def test_explosion_is_recorded(monkeypatch, mode: str, reason: str) -> None:
    monkeypatch.setattr(mlff, "load_calculator", lambda *a, **k: (_ToyCalculator(mode), "mlff:toy"))
    lattice = Lattice.cubic(10.0)
    spread = Structure(lattice, ["Cu"] * 3, [[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.8, 0.2, 0.4]])
    single = Structure(lattice, ["Cu"], [[0.5, 0.5, 0.5]])
    exploded, fine = relax_structures([spread, single], relax_cell=False, progress=False)
    assert exploded.status == "exploded" and reason in exploded.reason
    assert exploded.structure is None and exploded.trajectory.initial_energy is not None
    assert fine.status == "ok" and fine.level_of_theory == "mlff:toy"


def test_single_point_matches_ase_calculator() -> None:
    calc, tag = load_calculator("chgnet")
    inputs = [_si(), _nacl(), _too_close()]
    results = single_point(inputs, model="chgnet", progress=False)
    assert [r.status for r in results] == ["ok", "ok", "failed"]
    for structure, result in zip(inputs[:2], results[:2], strict=True):
        atoms = mlff._to_atoms(structure)
        atoms.calc = calc
        assert result.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        assert result.level_of_theory == tag == "mlff:chgnet-0.3.0"


def test_unavailable_models_fail_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(MLFFUnavailable, match="matgl"):
        load_calculator("matgl:/nonexistent")
    with pytest.raises(MLFFUnavailable, match="mattersim is not installed"):
        load_calculator("mattersim")
    assert time.perf_counter() - start < 2.0
    with pytest.raises(ValueError, match="unknown MLFF"):
        load_calculator("not-a-model")


def test_elemental_reference_cache_is_written_and_reused(tmp_path, monkeypatch) -> None:
    first = mlff_elemental_energies(["Cu", "Au"], "chgnet", n_polymorphs=1)
    cache = tmp_path / "cache" / "mlff" / "chgnet-0.3.0" / "elements.json"
    stored = json.loads(cache.read_text())
    assert stored["level_of_theory"] == "mlff:chgnet-0.3.0" and len(stored["polymorphs"]) == 2
    assert -5.0 < first["Cu"] < -3.0

    def must_not_relax(*args, **kwargs):
        raise AssertionError("cached elemental energies were recomputed")

    monkeypatch.setattr(mlff_reference, "relax", must_not_relax)
    assert mlff_elemental_energies(["Au", "Cu"], "chgnet", n_polymorphs=1) == first


def test_mlff_hull_reference_same_level() -> None:
    cuau = Structure(Lattice.tetragonal(2.8, 3.7), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    records = [
        CrystalRecord(cuau, "cuau", "toy"),
        CrystalRecord(_too_close(), "broken", "toy"),  # skipped: fails to relax
        CrystalRecord(_nacl(), "nacl", "toy"),  # outside the system
    ]
    ref = mlff_hull_reference("Au-Cu", records, "chgnet", elemental_polymorphs=1, progress=False)
    assert isinstance(ref, EntryHullReference) and len(ref) == 1
    assert ref.level_of_theory == "mlff:chgnet-0.3.0"
    relaxed = relax_structures([cuau], "chgnet", progress=False)[0]
    result = ref.e_above_hull(
        relaxed.structure.composition,
        relaxed.energy_per_atom,
        level_of_theory=relaxed.level_of_theory,
        kind="total",
    )
    assert result.e_above_hull <= 1e-6  # its own reference point (or below the elements)
    with pytest.raises(LevelOfTheoryMismatch):  # never on the DFT hull
        mp_formation_energy_reference().e_above_hull(
            "AuCu", -0.1, level_of_theory=relaxed.level_of_theory
        )
    again = mlff_hull_reference("Au-Cu", records, "chgnet", elemental_polymorphs=1, progress=False)
    assert again.formation_energy_per_atom("AuCu", relaxed.energy_per_atom) == pytest.approx(
        result.formation_energy_per_atom, abs=1e-4
    )


def test_threads_relaxing_at_once_get_the_results_of_one_thread() -> None:
    """ASE calculators keep their last results: shared between threads (a FireWorks worker's
    rocket threads) they returned another structure's forces. Each thread has its own."""
    import threading

    structures = [
        Structure(Lattice.cubic(a), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]]) for a in (3.1, 3.3)
    ] + [
        Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) for a in (3.0, 3.2)
    ]
    alone = [
        relax_structures([s], "chgnet", fmax=0.1, max_steps=30, progress=False)[0]
        for s in structures
    ]
    together: dict[int, mlff.RelaxResult] = {}

    def relax(index: int) -> None:
        together[index] = relax_structures(
            [structures[index]], "chgnet", fmax=0.1, max_steps=30, progress=False
        )[0]

    threads = [threading.Thread(target=relax, args=(i,)) for i in range(len(structures))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, result in enumerate(alone):
        assert together[index].ok, together[index].reason
        assert together[index].energy_per_atom == pytest.approx(result.energy_per_atom, abs=1e-5)
