"""Data tensors, the pymatgen edge (A27 polar form, Niggli cells) and checkpoints.

Checkpoints and tensor files are read with ``torch.load(weights_only=True)``: a damaged,
foreign or malicious file must raise a clear error and never run code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import TINY, build_network, random_batch, random_times, tiny_config
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from model.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    export_checkpoint,
    load_checkpoint,
    read_payload,
    same_architecture,
    save_checkpoint,
)
from model.config import load_model_config
from model.data import CrystalTensors, DatasetError
from model.structures import (
    batch_to_structures,
    structures_to_batch,
    structures_to_tensors,
    to_symmetric_lattice,
)

# --------------------------------------------------------------------------------------------
# Crystal tensor files
# --------------------------------------------------------------------------------------------


def small_tensors(ids=("a", "b", "c")) -> CrystalTensors:
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([1, 3, 2][: len(ids)] + [2] * max(0, len(ids) - 3))
    total = int(counts.sum())
    return CrystalTensors(
        atomic_numbers=torch.randint(1, 101, (total,), generator=generator),
        frac_coords=torch.rand(total, 3, generator=generator),
        lattice=5 * torch.eye(3).expand(len(ids), 3, 3).clone(),
        num_atoms=counts,
        ids=list(ids),
        source="unit test",
    )


def test_crystal_tensors_survive_a_save_and_load_round_trip(tmp_path):
    tensors = small_tensors()
    path = tmp_path / "sub" / "crystals.pt"
    tensors.save(path)
    assert not path.with_name(path.name + ".partial").exists()
    loaded = CrystalTensors.load(path)
    for name in ("atomic_numbers", "frac_coords", "lattice", "num_atoms"):
        assert torch.equal(getattr(loaded, name), getattr(tensors, name)), name
    assert loaded.ids == tensors.ids and loaded.source == "unit test"
    batch = loaded.batch(torch.tensor([2, 0]))
    assert batch.num_atoms.tolist() == [2, 1]
    assert torch.equal(
        batch.frac_coords, torch.cat([tensors.frac_coords[4:6], tensors.frac_coords[0:1]])
    )


def test_damaged_or_foreign_tensor_files_raise_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no tensor file"):
        CrystalTensors.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(DatasetError):
        CrystalTensors.load(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else"}, foreign)
    with pytest.raises(DatasetError, match="not a CrystalForge crystal tensor file"):
        CrystalTensors.load(foreign)


def test_the_train_validation_split_is_deterministic_and_depends_only_on_ids():
    ids = [f"mp-{i}" for i in range(400)]
    tensors = small_tensors(ids)
    train, validation = tensors.split(0.25)
    again_train, again_validation = tensors.split(0.25)
    assert torch.equal(train, again_train) and torch.equal(validation, again_validation)
    assert sorted(train.tolist() + validation.tolist()) == list(range(400))
    assert (
        0.25 * 400 - 5 * (400 * 0.25 * 0.75) ** 0.5
        < validation.numel()
        < 0.25 * 400 + 5 * (400 * 0.25 * 0.75) ** 0.5
    )
    # another order of the same ids, and other contents, put each id on the same side
    order = torch.randperm(400, generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = small_tensors([ids[i] for i in order])
    shuffled.frac_coords = torch.rand_like(shuffled.frac_coords)
    _, shuffled_validation = shuffled.split(0.25)
    assert {shuffled.ids[i] for i in shuffled_validation.tolist()} == {
        ids[i] for i in validation.tolist()
    }
    # a larger fraction only adds crystals to validation; zero empties it
    _, larger = tensors.split(0.5)
    assert set(validation.tolist()) <= set(larger.tolist())
    assert tensors.split(0.0)[1].numel() == 0


# --------------------------------------------------------------------------------------------
# The pymatgen edge
# --------------------------------------------------------------------------------------------


def chiral_structure() -> Structure:
    """Four distinct species at generic positions in a triclinic cell: no symmetry at all."""
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 80.0, 95.0, 105.0)
    frac = [[0.05, 0.1, 0.2], [0.55, 0.3, 0.15], [0.25, 0.7, 0.6], [0.8, 0.85, 0.45]]
    return Structure(lattice, ["Li", "O", "Fe", "S"], frac)


def handedness(structure: Structure) -> float:
    """Triple product of the minimum-image vectors from the first site to the next three:
    unchanged by proper rotations, translations and cell choice, flipped by a mirror."""
    lattice = structure.lattice
    species = [site.specie.symbol for site in structure]
    origin = structure.frac_coords[species.index("Li")]
    vectors = []
    for symbol in ("O", "Fe", "S"):
        target = structure.frac_coords[species.index(symbol)]
        _, image = lattice.get_distance_and_image(origin, target)
        vectors.append(lattice.get_cartesian_coords(target + image - origin))
    return float(np.linalg.det(np.array(vectors)))


def left_handed(structure: Structure) -> Structure:
    """The same Cartesian crystal described with a left-handed basis (two vectors swapped)."""
    matrix = structure.lattice.matrix[[0, 2, 1]]
    frac = structure.frac_coords[:, [0, 2, 1]]
    result = Structure(Lattice(matrix), structure.species, frac)
    assert np.linalg.det(matrix) < 0
    np.testing.assert_allclose(result.cart_coords, structure.cart_coords, atol=1e-10)
    return result


@pytest.mark.parametrize("handed", ["right", "left"])
def test_the_symmetric_lattice_is_positive_definite_and_describes_the_same_crystal(handed):
    original = chiral_structure()
    structure = original if handed == "right" else left_handed(original)
    lattice, frac, numbers = to_symmetric_lattice(structure)
    np.testing.assert_allclose(lattice, lattice.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(lattice) > 0)
    assert np.all((frac >= 0) & (frac < 1))
    rebuilt = Structure(Lattice(lattice), numbers, frac)
    assert rebuilt.volume == pytest.approx(structure.volume, rel=1e-9)
    assert StructureMatcher(primitive_cell=False, scale=False).fit(rebuilt, structure)
    # the same crystal, not its mirror image
    assert handedness(rebuilt) == pytest.approx(handedness(original), rel=1e-8)
    assert sorted(numbers) == sorted(site.specie.Z for site in structure)


def test_the_symmetric_lattice_of_a_nonreduced_cell_is_its_niggli_cell():
    structure = chiral_structure()
    skewed = Structure(
        Lattice(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ structure.lattice.matrix),
        structure.species,
        structure.frac_coords @ np.linalg.inv(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])),
    )
    np.testing.assert_allclose(skewed.cart_coords, structure.cart_coords, atol=1e-10)
    a, _, _ = to_symmetric_lattice(structure)
    b, _, _ = to_symmetric_lattice(skewed)
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(a)), np.sort(np.linalg.eigvalsh(b)), atol=1e-8
    )


def test_structures_to_tensors_keeps_usable_crystals_in_symmetric_form(perovskite_records):
    build = structures_to_tensors(perovskite_records, max_atoms=20, source="perov")
    tensors = build.tensors
    assert build.skipped == {} and len(tensors) == 8
    assert tensors.ids == [identifier for identifier, _ in perovskite_records]
    torch.testing.assert_close(tensors.lattice, tensors.lattice.mT)
    assert bool((torch.linalg.eigvalsh(tensors.lattice.double()) > 0).all())
    matcher = StructureMatcher()
    for structure, (_, original) in zip(
        batch_to_structures(tensors.batch(torch.arange(8))), perovskite_records, strict=True
    ):
        assert matcher.fit(structure, original)
    too_small = structures_to_tensors(
        perovskite_records[:2] + [("big", perovskite_records[0][1] * (2, 1, 1))], max_atoms=5
    )
    assert too_small.skipped == {"more than 5 atoms": ["big"]}
    with pytest.raises(ValueError, match="no usable crystals"):
        structures_to_tensors(perovskite_records[:2], max_atoms=3)


def test_structures_survive_a_round_trip_through_a_batch(perovskite_records):
    structures = [chiral_structure(), left_handed(chiral_structure())] + [
        s for _, s in perovskite_records[:3]
    ]
    batch = structures_to_batch(structures)
    assert batch.num_atoms.tolist() == [len(s) for s in structures]
    back = batch_to_structures(batch)
    for original, rebuilt in zip(structures, back, strict=True):
        np.testing.assert_allclose(rebuilt.lattice.matrix, original.lattice.matrix, atol=1e-5)
        assert [site.specie for site in rebuilt] == [site.specie for site in original]
        difference = rebuilt.frac_coords - original.frac_coords
        np.testing.assert_allclose(difference - np.round(difference), 0, atol=1e-5)
        assert StructureMatcher().fit(rebuilt, original)


@pytest.mark.parametrize("position", [1 - 1e-9, -1e-12, -1e-17, 1.0])
def test_sites_on_the_cell_boundary_get_fractional_coordinates_in_the_half_open_unit_cube(position):
    """CrystalBatch and CrystalTensors promise ``frac_coords`` in ``[0, 1)``; a float64 value just
    below 1 (or a tiny negative one, as CIF rounding produces) must not become 1.0 in float32."""
    structure = Structure(
        Lattice.cubic(4.0),
        ["Li", "O"],
        [[0.0, 0.0, 0.0], [0.5, 0.5, position]],
        coords_are_cartesian=False,
    )
    _, frac, _ = to_symmetric_lattice(structure)
    assert np.all((frac >= 0) & (frac < 1)), frac
    tensors = structures_to_tensors([("edge", structure)], max_atoms=20).tensors
    batch = structures_to_batch([structure])
    for name, values in (
        ("structures_to_tensors", tensors.frac_coords),
        ("structures_to_batch", batch.frac_coords),
    ):
        assert values.dtype == torch.float32
        assert bool((values >= 0).all() and (values < 1).all()), (name, values.tolist())


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    config = load_model_config(TINY)
    network = build_network(TINY, seed=5, double=False)
    network.statistics.fit(torch.tensor([8, 8, 22]), 4 * torch.eye(3)[None], torch.tensor([3]))
    path = save_checkpoint(
        tmp_path / "model.pt", network, config, step=42, history=[{"step": 42, "validation": 1.5}]
    )
    return path, network, config


def test_a_saved_checkpoint_loads_into_a_network_with_identical_outputs(saved):
    path, network, config = saved
    loaded = load_checkpoint(path)
    assert loaded.step == 42 and loaded.config == config
    assert loaded.payload["history"] == [{"step": 42, "validation": 1.5}]
    assert loaded.payload["statistics"]["atomic_numbers"] == [8, 22]
    batch = random_batch(seed=3, dtype=torch.float32)
    t = random_times(batch.num_crystals, dtype=torch.float32)
    with torch.no_grad():
        expected, actual = network(batch, t), loaded.network(batch, t)
    for name in ("coords", "lattice", "type_logits"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value), name
    assert not loaded.network.training


def test_an_exported_checkpoint_samples_identically_without_its_training_state(saved, tmp_path):
    path, network, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["optimizer"] = {"state": {}, "param_groups": []}  # as train() stores it
    torch.save(payload, path)
    released = export_checkpoint(path, tmp_path / "released.pt", {"hardware": "test"})
    stored = read_payload(released)
    assert "optimizer" not in stored and stored["provenance"] == {"hardware": "test"}
    loaded = load_checkpoint(released)
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value), name


def test_sampling_steps_do_not_change_the_architecture():
    from dataclasses import replace

    config = load_model_config(TINY)
    faster = replace(config, diffusion=replace(config.diffusion, sampling_steps=100))
    assert same_architecture(config, faster)
    coarser = replace(config, diffusion=replace(config.diffusion, num_steps=500))
    assert not same_architecture(config, coarser)


def test_a_conditional_network_round_trips_with_its_adapters(tmp_path):
    config = tiny_config(condition_dim=4)
    network = build_network(config, seed=1, double=False)
    with torch.no_grad():
        for mixin in [m for per_layer in network.mixins for m in per_layer]:
            mixin.weight.normal_()
    path = save_checkpoint(tmp_path / "cond.pt", network, config, step=1)
    loaded = load_checkpoint(path).network
    batch = random_batch(seed=2, dtype=torch.float32)
    t = random_times(batch.num_crystals, dtype=torch.float32)
    condition = torch.ones(batch.num_crystals, 4)
    with torch.no_grad():
        assert torch.equal(
            loaded(batch, t, condition=condition).coords,
            network(batch, t, condition=condition).coords,
        )


def _record_execution(marker: str) -> None:  # what a malicious pickle would call on load
    Path(marker).write_text("executed")


class Payload:
    """An arbitrary Python object; unpickling it would run ``_record_execution``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_record_execution, (self.marker,))


class PlainObject:
    pass


def single_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message.strip(), message
    return message


def test_a_missing_checkpoint_raises_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at") as error:
        load_checkpoint(tmp_path / "nothing.pt")
    single_line(error)


def test_a_truncated_checkpoint_raises_a_checkpoint_error(saved):
    path, *_ = saved
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 100):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="corrupt or truncated") as error:
            load_checkpoint(path)
        assert str(path) in single_line(error)


@pytest.mark.parametrize("content", ["random", "text"])
def test_a_random_bytes_file_raises_a_checkpoint_error_that_calls_it_corrupt(tmp_path, content):
    """Garbage is reported as damage, not as a file holding foreign Python objects (which
    would wrongly suggest the file is a real pickle that merely needs a less safe loader)."""
    path = tmp_path / f"{content}.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        path.write_bytes(b"hello, this is not a checkpoint\n" * 20)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = single_line(error)
    assert str(path) in message
    assert "corrupt" in message or "not a CrystalForge checkpoint" in message, message
    assert "objects other than tensors" not in message, message


@pytest.mark.parametrize("kind", ["reduce", "plain"])
def test_a_checkpoint_holding_arbitrary_python_objects_is_refused_without_running_code(
    tmp_path, kind
):
    marker = tmp_path / "executed.txt"
    path = tmp_path / "evil.pt"
    thing = Payload(marker) if kind == "reduce" else PlainObject()
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": {}, "state_dict": {}, "step": 0, "x": thing}, path
    )
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle") as error:
        load_checkpoint(path)
    assert not marker.exists(), "loading a checkpoint executed code from the file"
    message = single_line(error)
    assert str(path) in message
    with pytest.raises(CheckpointError):
        read_payload(path)
    assert not marker.exists()


def test_a_file_with_another_format_tag_is_not_a_checkpoint(saved, tmp_path):
    path, *_ = saved
    payload = torch.load(path, weights_only=True)
    for value in ("crystalforge-checkpoint-v0", None):
        payload["format"] = value
        other = tmp_path / "other.pt"
        torch.save(payload, other)
        with pytest.raises(CheckpointError, match="not a CrystalForge checkpoint") as error:
            load_checkpoint(other)
        single_line(error)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a CrystalForge checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_a_checkpoint_missing_a_required_key_is_incomplete(saved, tmp_path):
    path, *_ = saved
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]
    torch.save(payload, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="lacks 'state_dict'"):
        load_checkpoint(tmp_path / "incomplete.pt")


def test_weights_that_do_not_fit_the_stored_config_raise_a_checkpoint_error(saved, tmp_path):
    path, *_ = saved
    payload = torch.load(path, weights_only=True)
    payload["config"]["network"]["hidden_dim"] = 16
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit the stored config") as error:
        load_checkpoint(tmp_path / "mismatch.pt")
    single_line(error)
    payload["config"]["network"]["hidden_dim"] = 32
    payload["config"]["network"]["no_such_key"] = 1
    torch.save(payload, tmp_path / "badconfig.pt")
    with pytest.raises(CheckpointError, match="unusable config"):
        load_checkpoint(tmp_path / "badconfig.pt")


def test_held_out_systems_remove_exactly_the_crystals_of_those_element_sets():
    numbers = {"Li": 3, "O": 8, "Co": 27}
    crystals = [["Li", "O"], ["Li", "Co", "O"], ["Co", "O", "O"], ["Li", "Co", "O", "O"]]
    atoms = [numbers[el] for crystal in crystals for el in crystal]
    tensors = CrystalTensors(
        atomic_numbers=torch.tensor(atoms),
        frac_coords=torch.rand(len(atoms), 3),
        lattice=torch.eye(3).repeat(len(crystals), 1, 1) * 4,
        num_atoms=torch.tensor([len(c) for c in crystals]),
        ids=["li2o", "licoo2", "coo2", "li-co-o-2"],
    )
    kept, removed = tensors.without_systems([frozenset({3, 27, 8})])
    assert removed == ["licoo2", "li-co-o-2"]  # its binaries (Li-O, Co-O) stay, as in the paper
    assert kept.ids == ["li2o", "coo2"]
    assert kept.atomic_numbers.tolist() == [3, 8, 27, 8, 8]
    same, none = tensors.without_systems([frozenset({3, 9})])
    assert same is tensors and none == []
