"""Type-recovery diagnostics: baselines and the rows a checkpoint is judged by."""

from __future__ import annotations

import pytest
import torch
from model_helpers import build_network, random_batch

from model.crystal import MASK_CLASS, types_to_classes
from model.diagnostics import copy_baseline, element_marginal, type_recovery


def test_the_copy_baseline_guesses_the_most_common_visible_element():
    classes = torch.tensor([8, 8, 3, 8, 26, 26, 8])
    masked = torch.tensor([False, False, False, True, False, True, True])
    crystals = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    # crystal 0 shows O, O, Li: guess O (right); crystal 1 shows Fe: guess Fe (1 of 2 right)
    assert copy_baseline(classes, masked, crystals) == 2 / 3


def test_element_marginal_is_a_distribution_without_the_mask():
    marginal = element_marginal(torch.tensor([8, 8, 3, 0]))
    assert float(marginal.sum()) == 1.0
    assert float(marginal[MASK_CLASS]) == 0.0
    assert float(marginal[types_to_classes(torch.tensor([8]))]) == pytest.approx(2 / 3)


def test_type_recovery_reports_every_requested_step_with_bounded_numbers():
    network = build_network(double=False)
    batch = random_batch(seed=3, num_atoms=(4, 6, 8), dtype=torch.float32, masked_fraction=0.0)
    rows = type_recovery(network, batch, element_marginal(batch.atomic_numbers), steps=(500, 1000))
    assert [row["step"] for row in rows] == [500, 1000]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["in_crystal"] <= 1
        assert row["nll"] > 0 and row["marginal_nll"] > 0
    assert rows[1]["masked_atoms"] == 18  # at t = 1 every type is masked
