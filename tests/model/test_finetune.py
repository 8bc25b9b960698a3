"""Fine-tuning and steered sampling (paper B.1-B.2; issue 19's science tests)."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.crystal import CrystalBatch
from model.data import CrystalTensors
from model.diffusion.atom_types import AbsorbingTypeDiffusion
from model.finetune import (
    FinetuneSettings,
    LabelledConditions,
    PropertyLabels,
    adapter_parameters,
    conditional_network,
    finetune,
    labelled_subset,
    specs_of,
)
from model.properties import Interval, PropertyKind, PropertySpec, embed_conditions
from model.sampler import SamplerSettings, sample
from tests.model.model_helpers import TINY, build_network, random_batch, random_times

GAP = PropertySpec("band_gap", PropertyKind.scalar, mean=2.0, std=1.0, low=0.0, high=5.0)
SYSTEM = PropertySpec("chemical_system", PropertyKind.chemical_system)


def tiny_base(tmp_path, seed=3):
    from model.config import load_model_config

    config = load_model_config(TINY)
    network = build_network(config, seed=seed, double=False)
    data = toy_data(24)
    network.statistics.fit(data.atomic_numbers, data.lattice, data.num_atoms)
    return save_checkpoint(tmp_path / "base.pt", network, config, step=7), data


def toy_data(count: int) -> CrystalTensors:
    """``count`` small Li-O / Na-Cl crystals (random geometry: the tests check plumbing and
    exact identities, not learning)."""
    generator = torch.Generator().manual_seed(0)
    num_atoms = torch.randint(2, 5, (count,), generator=generator)
    numbers = []
    for index, n in enumerate(num_atoms.tolist()):
        pair = (3, 8) if index % 2 else (11, 17)
        numbers += [pair[i % 2] for i in range(n)]
    lattice = torch.diag_embed(4.0 + torch.rand(count, 3, generator=generator))
    return CrystalTensors(
        atomic_numbers=torch.tensor(numbers),
        frac_coords=torch.rand(int(num_atoms.sum()), 3, generator=generator),
        lattice=lattice,
        num_atoms=num_atoms,
        ids=[f"toy-{i}" for i in range(count)],
    )


def gap_labels(data: CrystalTensors) -> PropertyLabels:
    values = [None if i % 5 == 0 else 0.5 * (i % 7) for i in range(len(data))]
    return PropertyLabels(spec=GAP, values=values)


def test_fresh_adapters_reproduce_the_base_model_exactly(tmp_path):
    path, _ = tiny_base(tmp_path)
    base = load_checkpoint(path)
    network, config = conditional_network(base.network, base.config, [SYSTEM, GAP])
    network.eval()
    assert config.network.condition_dims == [SYSTEM.dim, GAP.dim]
    batch = random_batch(seed=4, num_atoms=(3, 2)).to("cpu", torch.float32)
    t = random_times(2, seed=5, dtype=torch.float32)
    condition = embed_conditions(
        [SYSTEM, GAP],
        {"chemical_system": [frozenset({3, 8}), None], "band_gap": [Interval(1.0, 2.0)] * 2},
        size=2,
    )
    with torch.no_grad():
        plain = base.network(batch, t)
        tuned = network(batch, t, condition=condition.values, condition_mask=condition.present)
    for name in ("coords", "lattice", "type_logits"):
        torch.testing.assert_close(getattr(tuned, name), getattr(plain, name), rtol=0, atol=0)


def test_label_dropout_hides_labels_and_unlabelled_crystals_are_always_null():
    data = toy_data(20)
    labels = gap_labels(data)
    indices = torch.arange(20)
    never = LabelledConditions([labels], FinetuneSettings(label_dropout=0.0))
    present = never.draw(indices, torch.Generator().manual_seed(0)).present[:, 0]
    assert present.tolist() == [value is not None for value in labels.values]
    always = LabelledConditions([labels], FinetuneSettings(label_dropout=1.0))
    assert not always.draw(indices, torch.Generator().manual_seed(0)).present.any()
    some = LabelledConditions([labels], FinetuneSettings(label_dropout=0.5))
    shown = torch.stack(
        [some.draw(indices, torch.Generator().manual_seed(s)).present[:, 0] for s in range(200)]
    )
    labelled = torch.tensor([value is not None for value in labels.values])
    assert abs(float(shown[:, labelled].float().mean()) - 0.5) < 0.05
    assert not shown[:, ~labelled].any()


def test_finetuning_records_its_properties_and_resumes_only_on_the_same_ones(tmp_path):
    path, data = tiny_base(tmp_path)
    settings = FinetuneSettings(batch_size=4, max_steps=3, validate_every=3, checkpoint_every=3)
    result = finetune(path, data, [gap_labels(data)], tmp_path / "ft", settings, log=lambda _: None)
    tuned = load_checkpoint(result.last_checkpoint)
    assert [spec.name for spec in specs_of(tuned.payload)] == ["band_gap"]
    assert specs_of(tuned.payload)[0] == GAP
    assert tuned.payload["finetune"]["base_step"] == 7
    assert tuned.network.condition_dims == [GAP.dim]
    # the data statistics (atom counts, volume per atom) are the base model's
    base = load_checkpoint(path)
    torch.testing.assert_close(
        tuned.network.statistics.volume_per_atom, base.network.statistics.volume_per_atom
    )
    more = finetune(
        path, data, [gap_labels(data)], tmp_path / "ft", settings, resume=result.last_checkpoint,
        max_steps=5, log=lambda _: None,
    )  # fmt: skip
    assert more.step == 5
    other = PropertyLabels(spec=SYSTEM, values=[frozenset({3, 8})] * len(data))
    with pytest.raises(CheckpointError, match="fine-tuned on other properties"):
        finetune(path, data, [other], tmp_path / "ft", settings, resume=result.last_checkpoint)


def test_freezing_the_base_trains_the_adapters_alone(tmp_path):
    path, data = tiny_base(tmp_path)
    settings = FinetuneSettings(
        batch_size=4, max_steps=3, validate_every=3, checkpoint_every=3, freeze_base=True,
        learning_rate=1e-2, label_dropout=0.0,
    )  # fmt: skip
    result = finetune(path, data, [gap_labels(data)], tmp_path / "ft", settings, log=lambda _: None)
    base = load_checkpoint(path).network.state_dict()
    tuned = load_checkpoint(result.last_checkpoint).network.state_dict()
    for key, value in base.items():
        torch.testing.assert_close(tuned[key], value, rtol=0, atol=0, msg=key)
    changed = [k for k in tuned if k.startswith("mixins.") and tuned[k].abs().sum() > 0]
    assert changed, "the mix-ins never moved"


def test_a_crystal_with_every_property_null_gives_the_adapters_no_gradient(tmp_path):
    # why a frozen-base fine-tune may skip unlabelled crystals: they cannot move an adapter
    path, _ = tiny_base(tmp_path)
    base = load_checkpoint(path)
    network, _ = conditional_network(base.network, base.config, [GAP])
    for parameter in adapter_parameters(network):  # as after some training: mix-ins non-zero
        torch.nn.init.normal_(parameter, std=0.1)
    batch = random_batch(seed=4, num_atoms=(3, 2)).to("cpu", torch.float32)
    t = random_times(2, seed=5, dtype=torch.float32)
    null = embed_conditions([GAP], {"band_gap": [None, None]}, size=2)
    out = network(batch, t, condition=null.values, condition_mask=null.present)
    (out.coords.square().sum() + out.lattice.square().sum() + out.type_logits.sum()).backward()
    for parameter in adapter_parameters(network):
        assert parameter.grad is None or not parameter.grad.any()


def test_a_frozen_base_fine_tune_keeps_only_the_labelled_crystals(tmp_path):
    data = toy_data(10)
    labels = gap_labels(data)  # crystals 0 and 5 unlabelled
    subset, kept = labelled_subset(data, [labels])
    assert subset.ids == [f"toy-{i}" for i in range(10) if i % 5]
    assert kept[0].values == [v for v in labels.values if v is not None]
    torch.testing.assert_close(
        subset.batch(torch.tensor([0])).frac_coords, data.batch(torch.tensor([1])).frac_coords
    )
    system = PropertyLabels(SYSTEM, [frozenset({3, 8})] * 10)  # any label keeps a crystal
    assert len(labelled_subset(data, [labels, system])[0]) == 10


def test_finetuning_refuses_an_already_tuned_base(tmp_path):
    path, data = tiny_base(tmp_path)
    settings = FinetuneSettings(batch_size=4, max_steps=1, validate_every=1, checkpoint_every=1)
    result = finetune(path, data, [gap_labels(data)], tmp_path / "ft", settings, log=lambda _: None)
    with pytest.raises(CheckpointError, match="already fine-tuned"):
        finetune(result.last_checkpoint, data, [gap_labels(data)], tmp_path / "again", settings)


def test_a_composition_fixed_sample_has_exactly_the_requested_composition():
    network = build_network(TINY, seed=2, double=False)
    one_cell = torch.tensor([3, 3, 27, 8, 8, 8, 8])  # Li2CoO4
    result = sample(
        network,
        torch.tensor([7, 7, 7]),
        SamplerSettings(num_steps=12),
        torch.Generator().manual_seed(0),
        fixed_types=one_cell.repeat(3),
    )
    crystals = result.crystals
    assert crystals.num_crystals == 3
    for index in range(3):
        numbers = crystals.atomic_numbers[crystals.batch == index]
        assert sorted(numbers.tolist()) == sorted(one_cell.tolist())


def test_the_network_sees_fixed_types_as_the_forward_process_would_show_them():
    """At ``t`` an atom of a fixed composition is shown with probability ``keep(t)``; once shown
    it stays shown (the reverse process never re-masks)."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.diffusion, self.statistics = inner, inner.diffusion, inner.statistics
            self.condition_dims = inner.condition_dims

        def forward(self, batch, t, condition=None, condition_mask=None):
            seen.append((float(t[0]), (batch.atomic_numbers != 0).float().mean().item()))
            return self.inner(batch, t, condition, condition_mask)

    network = Recorder(build_network(TINY, seed=2, double=False))
    sample(
        network,
        torch.full((40,), 5),
        SamplerSettings(num_steps=10, corrector_steps=0),
        torch.Generator().manual_seed(1),
        fixed_types=torch.tensor([11, 17, 17, 17, 11]).repeat(40),
    )
    times = [t for t, _ in seen]
    shown = [fraction for _, fraction in seen]
    assert times == pytest.approx([i / 10 for i in range(10, 0, -1)])
    assert shown == sorted(shown)  # monotone: revealed atoms stay revealed
    for t, fraction in seen:
        assert abs(fraction - (1 - t)) < 0.12


def test_an_element_mask_leaves_no_disallowed_element():
    network = build_network(TINY, seed=2, double=False)
    allowed = torch.zeros(101, dtype=torch.bool)
    allowed[[2, 26, 7]] = True  # Li, Co, O (classes are Z - 1)
    result = sample(
        network,
        torch.full((16,), 6),
        SamplerSettings(num_steps=10),
        torch.Generator().manual_seed(3),
        allowed_classes=allowed,
    )
    assert set(result.crystals.atomic_numbers.tolist()) <= {3, 27, 8}


def test_an_unmasked_atom_keeps_its_type_even_when_the_model_gives_it_no_mass():
    types = AbsorbingTypeDiffusion()
    logits = torch.zeros(2, 101)
    logits[:, 5] = 200.0  # the model is certain of class 5 ...
    logits[:, 7] = -200.0  # ... and gives class 7, which atom 0 already has, e^-400
    current = torch.tensor([7, 100])  # atom 0 revealed as class 7, atom 1 still [MASK]
    t, t_prev = torch.tensor([0.5, 0.5]), torch.tensor([0.49, 0.49])
    for seed in range(5):
        drawn = types.reverse_step(logits, current, t, t_prev, torch.Generator().manual_seed(seed))
        assert int(drawn[0]) == 7
        assert int(drawn[1]) in (5, 100)


def test_guided_sampling_with_a_per_property_mask_runs_with_only_some_properties_given(tmp_path):
    path, data = tiny_base(tmp_path)
    settings = FinetuneSettings(batch_size=4, max_steps=1, validate_every=1, checkpoint_every=1)
    labels = [PropertyLabels(SYSTEM, [frozenset({3, 8})] * len(data)), gap_labels(data)]
    result = finetune(path, data, labels, tmp_path / "ft", settings, log=lambda _: None)
    tuned = load_checkpoint(result.last_checkpoint)
    condition = embed_conditions(
        specs_of(tuned.payload), {"band_gap": [Interval(None, 1.0)] * 2}, size=2
    )
    assert condition.present.tolist() == [[False, True]] * 2
    out = sample(
        tuned.network,
        torch.tensor([3, 4]),
        SamplerSettings(num_steps=5),
        torch.Generator().manual_seed(0),
        condition=condition,
    )
    assert (
        isinstance(out.crystals, CrystalBatch) and out.crystals.num_crystals + out.num_dropped == 2
    )
