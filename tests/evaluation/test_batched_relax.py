"""The batched relaxation engine gives what the per-structure engine gives, many at a time.

Real CHGNet, small real cells: perturbed rocksalt NaCl, diamond Si, layered LiCoO2 and one
structure with atoms 0.1 Å apart. Results agree with ``relax_structures`` (statuses, energies
within 5 meV/atom), come back in input order, and each failure stays with its structure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from pymatgen.core import Lattice, Structure

import evaluation.relax.batched as batched
from evaluation.records import CrystalRecord
from evaluation.relax.batched import relax_batched
from evaluation.relax.engine import ExplosionCriteria, relax_structures

pytest.importorskip("torch_sim")
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

DIAMOND = [
    [0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
    [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25],
]  # fmt: skip
MEV = 1e-3


def _nacl() -> Structure:
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return rocksalt.get_primitive_structure().perturb(0.1, seed=3)


def _si() -> Structure:
    return Structure(Lattice.cubic(5.6), ["Si"] * 8, DIAMOND).perturb(0.1, seed=1)


def _licoo2() -> Structure:
    layered = Structure.from_spacegroup(
        "R-3m",
        Lattice.hexagonal(2.85, 14.1),
        ["Li", "Co", "O"],
        [[0, 0, 0], [0, 0, 0.5], [0, 0, 0.24]],
    )
    return layered.get_primitive_structure().perturb(0.05, seed=2)


def _stretched_si() -> Structure:
    """Diamond Si at a = 6.4 Å (CHGNet's is 5.47): its volume falls by a third on relaxing."""
    return Structure(Lattice.cubic(6.4), ["Si"] * 8, DIAMOND).perturb(0.05, seed=4)


def _too_close() -> Structure:
    return Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0, 0, 0], [0.025, 0, 0]])  # 0.1 Å


@pytest.fixture(scope="module")
def records() -> list[CrystalRecord]:
    structures = {"nacl": _nacl(), "si": _si(), "too-close": _too_close(), "licoo2": _licoo2()}
    return [CrystalRecord(structure, label) for label, structure in structures.items()]


@pytest.fixture(scope="module")
def both(records) -> tuple[list, list]:
    """The same structures through the per-structure engine and the batched one."""
    settings = dict(model="chgnet", fmax=0.05, max_steps=200, progress=False)
    return relax_structures(records, **settings), relax_batched(records, **settings)


def test_batched_results_agree_with_the_per_structure_engine(both):
    one_by_one, batch = both
    assert [r.status for r in batch] == [r.status for r in one_by_one]
    for single, batched_result in zip(one_by_one, batch, strict=True):
        if single.status == "ok":
            assert batched_result.energy_per_atom == pytest.approx(
                single.energy_per_atom, abs=5 * MEV
            )
            assert batched_result.structure.volume == pytest.approx(
                single.structure.volume, rel=5e-3
            )
            assert batched_result.max_force < 0.1  # the atoms' forces, as relax_structures
            assert batched_result.level_of_theory == single.level_of_theory


def test_results_come_back_in_input_order_under_their_labels(records, both):
    _, batch = both
    assert [r.label for r in batch] == [record.label for record in records]
    for record, result in zip(records, batch, strict=True):
        if result.ok:  # same species in the same order as the input
            assert result.structure.species == record.structure.species


def test_a_bad_structure_fails_on_its_own_while_the_others_relax(both):
    _, batch = both
    by_label = {r.label: r for r in batch}
    assert by_label["too-close"].status == "failed"
    assert "0.10 Å apart" in by_label["too-close"].reason
    assert by_label["too-close"].structure is None
    assert all(by_label[label].status == "ok" for label in ("nacl", "si", "licoo2"))


def test_a_relaxation_that_explodes_in_flight_is_recorded_for_that_structure_only(records):
    """Stretched Si loses a third of its volume: with a 1.25x volume limit it explodes mid-run,
    with the per-structure engine's verdict, while the structures beside it finish."""
    settings = dict(model="chgnet", max_steps=200, progress=False)
    criteria = ExplosionCriteria(max_volume_factor=1.25)
    stretched = CrystalRecord(_stretched_si(), "stretched-si")
    picked = [records[0], stretched, records[1]]  # NaCl, stretched Si, Si
    batch = relax_batched(picked, criteria=criteria, **settings)
    single = relax_structures([stretched], criteria=criteria, **settings)[0]
    assert [r.status for r in batch] == ["ok", "exploded", "ok"]
    assert single.status == "exploded"
    assert batch[1].reason == single.reason  # the same step, the same verdict
    assert batch[1].reason.startswith("volume changed by a factor 0.")
    assert len(batch[1].trajectory.energies) == len(single.trajectory.energies) > 1


def test_a_structure_the_model_raises_on_fails_alone(records, monkeypatch):
    """An exception in a batched step is retried structure by structure: only the culprit fails."""
    model, tag = batched.loaded_model("chgnet", "cpu")

    class RaisesOnCobalt(type(model)):
        def forward(self, state, **kwargs):
            if (state.atomic_numbers == 27).any():
                raise RuntimeError("no cobalt here")
            return super().forward(state, **kwargs)

    broken = RaisesOnCobalt(model.model, "cpu")
    monkeypatch.setattr(batched, "loaded_model", lambda name, device: (broken, tag))
    results = relax_batched(records, max_steps=200, progress=False)
    assert [r.status for r in results] == ["ok", "ok", "failed", "failed"]
    assert results[3].reason == "RuntimeError: no cobalt here"


def test_the_atom_budget_caps_the_atoms_in_flight(records, both, monkeypatch):
    """With room for 8 atoms, Si (8) never shares a batch; the results do not depend on the
    company a structure keeps."""
    model, tag = batched.loaded_model("chgnet", "cpu")
    seen = []

    class Counting(type(model)):
        def forward(self, state, **kwargs):
            seen.append(state.n_atoms)
            return super().forward(state, **kwargs)

    counting = Counting(model.model, "cpu")
    monkeypatch.setattr(batched, "loaded_model", lambda name, device: (counting, tag))
    results = relax_batched(records, max_steps=200, max_atoms=8, progress=False)
    assert max(seen) == 8
    for alone, together in zip(results, both[1], strict=True):
        assert alone.status == together.status
        if alone.ok:
            assert alone.energy_per_atom == pytest.approx(together.energy_per_atom, abs=1 * MEV)


def test_the_step_cap_leaves_unfinished_relaxations_not_converged(records):
    results = relax_batched(records[:2], max_steps=3, progress=False)
    reference = relax_structures(records[:2], max_steps=3, progress=False)
    assert [r.status for r in results] == [r.status for r in reference]
    for result in results:
        if result.status == "not_converged":
            assert result.n_steps == 3 and not result.converged
            assert "in 3 steps" in result.reason
            assert result.structure is not None  # usable, as relax_structures gives it


def test_positions_only_relaxations_agree_too(records):
    settings = dict(max_steps=200, relax_cell=False, progress=False)
    batch = relax_batched(records[:2], **settings)
    one_by_one = relax_structures(records[:2], **settings)
    assert [r.status for r in batch] == [r.status for r in one_by_one] == ["ok", "ok"]
    for single, batched_result in zip(one_by_one, batch, strict=True):
        assert batched_result.structure.volume == pytest.approx(single.structure.volume)  # kept
        assert batched_result.energy_per_atom == pytest.approx(single.energy_per_atom, abs=MEV)


def test_the_project_entry_point_runs_batched_models_on_the_batched_engine(monkeypatch):
    import evaluation.relax.engine as engine
    from evaluation.relax.run import is_batched, relax

    assert is_batched("CHGNet") and is_batched("sevennet") and is_batched("7net-l3i5")
    assert not is_batched("mattersim") and not is_batched("matgl:M3GNet-MP-2021.2.8-PES")
    with pytest.raises(ValueError, match="unknown MLFF 'chgnet2'"):
        is_batched("chgnet2")

    def per_structure(*args, **kwargs):
        raise AssertionError("chgnet went through the per-structure engine")

    monkeypatch.setattr(engine, "relax_structures", per_structure)
    monkeypatch.setattr("evaluation.relax.run.relax_structures", per_structure)
    finished = []
    (result,) = relax(
        [_nacl()], "chgnet", 0.1, 30, progress=False, on_result=lambda i, r: finished.append(i)
    )
    assert result.ok and finished == [0]


def test_models_without_a_batched_interface_go_through_the_per_structure_engine(monkeypatch):
    from evaluation.relax.run import relax

    calls = []
    monkeypatch.setattr(
        "evaluation.relax.run.relax_structures",
        lambda structures, model, *args, **kwargs: calls.append(model) or [],
    )
    assert relax([_nacl()], "mattersim", progress=False) == []
    assert calls == ["mattersim"]
