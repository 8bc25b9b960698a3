"""Property conditions: embeddings, widened training labels and target parsing (issue 19)."""

from __future__ import annotations

import pytest
import torch

from model.properties import (
    NUM_ELEMENTS,
    NUM_SPACE_GROUPS,
    ConditionBatch,
    Interval,
    PropertyKind,
    PropertySpec,
    embed_conditions,
    widen,
)
from model.property_data import LabelError, parse_target, split_condition

GAP = PropertySpec("band_gap", PropertyKind.scalar, mean=1.5, std=1.2, low=0.0, high=6.0)
SYSTEM = PropertySpec("chemical_system", PropertyKind.chemical_system)
GROUP = PropertySpec("space_group", PropertyKind.space_group)
PHASE = PropertySpec("phase", PropertyKind.categorical, categories=["alpha", "beta"])


def test_a_scalar_embeds_both_ends_of_its_interval_and_flags_the_open_ones():
    exact, ranged, at_least = GAP.embed(
        [Interval.exact(3.0), Interval(2.5, 3.5), Interval(3.0, None)]
    )
    half = (GAP.dim - 2) // 2
    assert GAP.dim == exact.shape[0] == 66
    # an exact value is the interval [v, v]: both ends encode the same number
    torch.testing.assert_close(exact[:half], exact[half : 2 * half])
    assert exact[-2:].tolist() == [0.0, 0.0]
    assert not torch.allclose(ranged, exact)
    # ">= 3" shares the lower end with "= 3"; its upper end is open (zeros and the flag)
    torch.testing.assert_close(at_least[:half], exact[:half])
    assert at_least[half : 2 * half].abs().sum() == 0
    assert at_least[-2:].tolist() == [0.0, 1.0]


def test_the_scalar_encoding_separates_nearby_values_and_is_bounded():
    values = torch.linspace(0.0, 6.0, 61)
    embedded = GAP.embed([Interval.exact(float(v)) for v in values])
    assert embedded.abs().max() <= 1.0
    distances = torch.cdist(embedded, embedded)
    off_diagonal = distances + torch.eye(len(values)) * 1e9
    assert off_diagonal.min() > 0.1  # 0.1 eV apart are distinguishable


def test_categorical_embeddings_are_one_hot_and_a_chemical_system_is_multi_hot():
    systems = SYSTEM.embed([frozenset({3, 8, 27})])
    assert systems.shape == (1, NUM_ELEMENTS)
    assert torch.nonzero(systems[0]).squeeze(-1).tolist() == [2, 7, 26]  # Z - 1
    groups = GROUP.embed([225, None])
    assert groups.shape == (2, NUM_SPACE_GROUPS)
    assert groups[0].sum() == 1 and groups[0, 224] == 1
    assert groups[1].abs().sum() == 0  # a null target embeds as zeros (it is masked anyway)
    assert PHASE.embed(["beta"]).tolist() == [[0.0, 1.0]]


def test_targets_that_do_not_suit_the_property_are_refused_with_its_name():
    with pytest.raises(ValueError, match="phase: unknown category 'gamma'"):
        PHASE.embed(["gamma"])
    with pytest.raises(ValueError, match="space_group: expected a space-group number"):
        GROUP.embed([231])
    with pytest.raises(ValueError, match="band_gap: expected a number or a range"):
        GAP.embed([3.0])
    with pytest.raises(ValueError, match="empty interval"):
        Interval(3.5, 2.5)


def test_conditions_of_a_batch_put_properties_side_by_side_with_a_presence_mask():
    batch = embed_conditions([SYSTEM, GAP], {"band_gap": [Interval.exact(1.0), None]}, size=2)
    assert isinstance(batch, ConditionBatch)
    assert batch.values.shape == (2, NUM_ELEMENTS + GAP.dim)
    assert batch.present.tolist() == [[False, True], [False, False]]
    with pytest.raises(ValueError, match="not a property of this model: bulk_modulus"):
        embed_conditions([SYSTEM], {"bulk_modulus": [Interval.exact(1.0)]}, size=1)


def test_widened_labels_always_contain_the_label_and_place_it_uniformly():
    generator = torch.Generator().manual_seed(0)
    draws = [widen(2.0, GAP, generator) for _ in range(4000)]
    assert all(interval.contains(2.0) for interval in draws)
    exact = [d for d in draws if d.low == d.high]
    lower_only = [d for d in draws if d.high is None]
    upper_only = [d for d in draws if d.low is None]
    ranges = [d for d in draws if d.low is not None and d.high is not None and d.low < d.high]
    assert abs(len(exact) / 4000 - 0.5) < 0.03
    assert abs(len(lower_only) / 4000 - 0.125) < 0.02
    assert abs(len(upper_only) / 4000 - 0.125) < 0.02
    # the label's position inside a two-sided range is uniform, whatever the width: the model
    # then learns the data restricted to the range, not a blur around its middle
    positions = torch.tensor([(2.0 - d.low) / (d.high - d.low) for d in ranges])
    assert abs(float(positions.mean()) - 0.5) < 0.03
    assert abs(float((positions < 0.25).float().mean()) - 0.25) < 0.04
    # one-sided ends are spread over the labels' whole span below (above) the label
    ends = torch.tensor([2.0 - d.low for d in lower_only])
    assert float(ends.min()) >= 0 and float(ends.max()) <= GAP.high - GAP.low
    assert abs(float(ends.mean()) - 3.0) < 0.3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.0", Interval(3.0, 3.0)),
        ("2.5..3.5", Interval(2.5, 3.5)),
        (">=300", Interval(300.0, None)),
        ("<=0.05", Interval(None, 0.05)),
        ("> 1", Interval(1.0, None)),
    ],
)
def test_scalar_targets_read_exact_values_ranges_and_inequalities(text, expected):
    assert parse_target(GAP, text) == expected


def test_chemical_systems_and_space_groups_read_symbols():
    assert parse_target(SYSTEM, "Li-Co-O") == frozenset({3, 27, 8})
    assert parse_target(SYSTEM, "Li,Co,O") == frozenset({3, 27, 8})
    assert parse_target(GROUP, "225") == 225
    assert parse_target(GROUP, "Fm-3m") == 225
    with pytest.raises(LabelError, match="'Qq' is not an element symbol"):
        parse_target(SYSTEM, "Li-Qq")
    with pytest.raises(LabelError, match="empty range"):
        parse_target(GAP, "3.5..2.5")
    with pytest.raises(LabelError, match="'abc' is not a number"):
        parse_target(GAP, "abc")


def test_a_condition_splits_into_name_and_value_keeping_inequalities():
    assert split_condition("band_gap=2.5..3.5") == ("band_gap", "2.5..3.5")
    assert split_condition("bulk_modulus>=300") == ("bulk_modulus", ">=300")
    assert split_condition("energy_above_hull<=0.05") == ("energy_above_hull", "<=0.05")
    with pytest.raises(LabelError, match="expected NAME=VALUE"):
        split_condition("band_gap")


def test_a_spec_round_trips_through_a_plain_dict():
    spec = PropertySpec(
        "space_group", PropertyKind.space_group, atom_counts={"225": [0, 1, 2]}, num_labels=3
    )
    assert PropertySpec.from_dict(spec.to_dict()) == spec
    counts = spec.sample_num_atoms(225, 200, torch.Generator().manual_seed(0))
    assert set(counts.tolist()) <= {1, 2} and (counts == 2).sum() > (counts == 1).sum()
    assert spec.sample_num_atoms(1, 5) is None  # no histogram for an unseen group
