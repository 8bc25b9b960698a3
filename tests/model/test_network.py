"""The score network (paper A.8, A31–A39, B44) against the symmetries the scores must have.

Cartesian coordinate scores rotate with the crystal, lattice scores transform as ``R S Rᵀ``
(A38), type logits are invariant; everything is permutation-equivariant and invariant to a
global translation of the fractional coordinates. Checked in float64 on random crystals.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import (
    SMALL,
    TINY,
    assert_no_neighbor_ties,
    build_network,
    random_batch,
    random_rotation,
    random_times,
    tiny_config,
)

import model
from model.config import load_model_config
from model.crystal import NUM_CLASSES, wrap

#: Every departure of NetworkConfig switched on (crystal context, whole shells at the cap,
#: smooth outputs, neighbour-count normalisation): the same symmetries must hold.
IMPROVED = tiny_config(
    crystal_context=True, neighbor_shells=True, smooth_outputs=True, avg_neighbors=8.0
)
CONFIGS = {"tiny": TINY, "small": SMALL, "improved": IMPROVED}


def _config(name):
    config = CONFIGS[name]
    return config if not isinstance(config, type(TINY)) else load_model_config(config)


@pytest.fixture(scope="module", params=["tiny", "small", "improved"])
def setup(request):
    config = _config(request.param)
    network = build_network(CONFIGS[request.param], seed=3)
    batch = random_batch(seed=0, num_atoms=(2, 3, 5))
    assert_no_neighbor_ties(batch, config)
    t = random_times(batch.num_crystals, seed=2)
    with torch.no_grad():
        output = network(batch, t)
    return config, network, batch, t, output


def close(actual, expected, **kwargs):
    torch.testing.assert_close(actual, expected, rtol=1e-8, atol=1e-9, **kwargs)


def test_the_outputs_have_one_score_per_atom_and_per_lattice_and_101_type_logits(setup):
    _, _, batch, _, output = setup
    assert output.coords.shape == (batch.frac_coords.shape[0], 3)
    assert output.lattice.shape == (batch.num_crystals, 3, 3)
    assert output.type_logits.shape == (batch.frac_coords.shape[0], NUM_CLASSES)
    for value in (output.coords, output.lattice, output.type_logits):
        assert value.dtype == torch.float64
        assert bool(torch.isfinite(value).all())
        assert float(value.abs().max()) > 0  # not trivially zero


def test_lattice_scores_are_symmetric(setup):
    _, _, _, _, output = setup
    torch.testing.assert_close(output.lattice, output.lattice.mT, rtol=0, atol=1e-12)


def test_rotating_the_crystal_rotates_coordinate_scores_and_conjugates_lattice_scores(setup):
    config, network, batch, t, output = setup
    rotation = random_rotation(torch.Generator().manual_seed(9))
    rotated = batch.replace(lattice=batch.lattice @ rotation.T)  # rows: l' = R l
    torch.testing.assert_close(rotated.cart_coords, batch.cart_coords @ rotation.T)
    assert_no_neighbor_ties(rotated, config)
    with torch.no_grad():
        turned = network(rotated, t)
    close(turned.coords, output.coords @ rotation.T)
    close(turned.lattice, rotation @ output.lattice @ rotation.T)
    close(turned.type_logits, output.type_logits)
    # fractional scores (what the diffusion uses) are rotation invariant
    close(turned.fractional_coords(rotated), output.fractional_coords(batch))


def test_permuting_the_atoms_of_each_crystal_permutes_the_atom_outputs(setup):
    _, network, batch, t, output = setup
    generator = torch.Generator().manual_seed(4)
    starts = torch.cumsum(batch.num_atoms, 0) - batch.num_atoms
    order = torch.cat(
        [
            start + torch.randperm(int(n), generator=generator)
            for start, n in zip(starts, batch.num_atoms, strict=True)
        ]
    )
    assert not torch.equal(order, torch.arange(order.shape[0]))
    permuted = batch.replace(
        atomic_numbers=batch.atomic_numbers[order], frac_coords=batch.frac_coords[order]
    )
    with torch.no_grad():
        shuffled = network(permuted, t)
    close(shuffled.coords, output.coords[order])
    close(shuffled.type_logits, output.type_logits[order])
    close(shuffled.lattice, output.lattice)


def test_translating_all_fractional_coordinates_of_a_crystal_changes_nothing(setup):
    config, network, batch, t, output = setup
    generator = torch.Generator().manual_seed(6)
    shift = torch.rand(batch.num_crystals, 3, generator=generator, dtype=torch.float64)
    moved = batch.replace(frac_coords=wrap(batch.frac_coords + shift[batch.batch]))
    assert_no_neighbor_ties(moved, config)
    with torch.no_grad():
        translated = network(moved, t)
    close(translated.coords, output.coords)
    close(translated.lattice, output.lattice)
    close(translated.type_logits, output.type_logits)


def test_a_crystal_scores_the_same_alone_as_in_a_batch(setup):
    _, network, batch, t, output = setup
    atom_batch = batch.batch
    for index in range(batch.num_crystals):
        keep = torch.arange(batch.num_crystals) == index
        with torch.no_grad():
            alone = network(batch.select(keep), t[keep])
        close(alone.coords, output.coords[atom_batch == index])
        close(alone.lattice, output.lattice[keep])
        close(alone.type_logits, output.type_logits[atom_batch == index])


def test_the_network_runs_in_float32_with_finite_outputs():
    network = build_network(TINY, seed=1, double=False)
    batch = random_batch(seed=2, dtype=torch.float32)
    output = network(batch, random_times(batch.num_crystals, dtype=torch.float32))
    assert output.coords.dtype == torch.float32
    assert all(
        bool(torch.isfinite(v).all()) for v in (output.coords, output.lattice, output.type_logits)
    )


# --------------------------------------------------------------------------------------------
# Conditioning adapters (B44)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional():
    config = tiny_config(condition_dim=4)
    network = build_network(config, seed=8)
    batch = random_batch(seed=11, num_atoms=(3, 2, 4))
    t = random_times(batch.num_crystals, seed=3)
    condition = torch.randn(
        batch.num_crystals, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    return network, batch, t, condition


def all_mixins(network):
    return [mixin for per_layer in network.mixins for mixin in per_layer]


def randomise_mixins(network, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mixin in all_mixins(network):
            mixin.weight.copy_(
                0.3 * torch.randn(mixin.weight.shape, generator=generator, dtype=torch.float64)
            )


def outputs_equal(a, b):
    for name in ("coords", "lattice", "type_logits"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_a_freshly_built_conditional_network_ignores_its_condition(conditional):
    network, batch, t, condition = conditional
    assert len(network.adapters) == len(network.mixins) == 1  # one property
    assert len(network.adapters[0]) == len(network.layers) == len(network.mixins[0])
    assert all(mixin.bias is None for mixin in all_mixins(network))
    assert all(float(mixin.weight.detach().abs().max()) == 0 for mixin in all_mixins(network))
    with torch.no_grad():
        plain = network(batch, t)
        outputs_equal(network(batch, t, condition=condition), plain)
        none = torch.zeros(batch.num_crystals, dtype=torch.bool)
        outputs_equal(network(batch, t, condition=condition, condition_mask=none), plain)


def test_a_conditional_network_is_the_unconditional_one_where_the_condition_is_null(conditional):
    network, batch, t, condition = conditional
    trained = build_network(tiny_config(condition_dim=4), seed=8)
    trained.load_state_dict(network.state_dict())
    randomise_mixins(trained, seed=2)
    with torch.no_grad():
        plain = trained(batch, t)
        outputs_equal(plain, network(batch, t))  # the mix-ins only act through a condition
        conditioned = trained(batch, t, condition=condition)
        for name in ("coords", "lattice", "type_logits"):
            assert not torch.allclose(
                getattr(conditioned, name), getattr(plain, name), rtol=1e-6, atol=1e-8
            ), name
        none = torch.zeros(batch.num_crystals, dtype=torch.bool)
        outputs_equal(trained(batch, t, condition=condition, condition_mask=none), plain)
        # a partial mask: crystals without a property get exactly the unconditional scores
        mask = torch.tensor([True, False, True])
        mixed = trained(batch, t, condition=condition, condition_mask=mask)
        atoms_null = ~mask[batch.batch]
        torch.testing.assert_close(
            mixed.coords[atoms_null], plain.coords[atoms_null], rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            mixed.lattice[~mask], plain.lattice[~mask], rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            mixed.coords[~atoms_null], conditioned.coords[~atoms_null], rtol=1e-12, atol=1e-12
        )
        torch.testing.assert_close(
            mixed.lattice[mask], conditioned.lattice[mask], rtol=1e-12, atol=1e-12
        )


def test_each_property_has_its_own_adapters_and_a_null_property_adds_nothing():
    network = build_network(tiny_config(condition_dims=[4, 3]), seed=8)
    randomise_mixins(network, seed=5)
    batch = random_batch(seed=11, num_atoms=(3, 2, 4))
    t = random_times(batch.num_crystals, seed=3)
    both = torch.randn(3, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    only_first = torch.tensor([[True, False]] * 3)
    # the same network with the second property's mix-ins removed
    without_second = build_network(tiny_config(condition_dims=[4, 3]), seed=8)
    without_second.load_state_dict(network.state_dict())
    with torch.no_grad():
        for mixin in without_second.mixins[1]:
            mixin.weight.zero_()
        masked = network(batch, t, condition=both, condition_mask=only_first)
        outputs_equal(masked, without_second(batch, t, condition=both))
        # the second property's embedding is ignored when it is null
        other = both.clone()
        other[:, 4:] = 7.0
        outputs_equal(network(batch, t, condition=other, condition_mask=only_first), masked)
        # and it changes the scores when given
        given = network(batch, t, condition=both)
        assert not torch.allclose(given.coords, masked.coords)
    assert [len(a[0][0].weight[0]) for a in network.adapters] == [4, 3]


def test_a_condition_of_the_wrong_shape_or_for_an_unconditional_network_is_rejected(conditional):
    network, batch, t, condition = conditional
    with pytest.raises(ValueError, match="condition must be"):
        network(batch, t, condition=condition[:, :3])
    plain_network = build_network(TINY, seed=1)
    with pytest.raises(ValueError, match="no conditioning adapters"):
        plain_network(batch, t, condition=condition)


def test_build_score_network_accepts_a_path_or_a_config():
    torch.manual_seed(0)
    from_path = model.build_score_network(str(TINY))
    torch.manual_seed(0)
    from_config = model.build_score_network(load_model_config(TINY))
    for (name, a), (_, b) in zip(
        from_path.state_dict().items(), from_config.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------
# The periodic graph (A.8.1)
# --------------------------------------------------------------------------------------------


def skewed_batch() -> model.CrystalBatch:
    """Two random crystals plus a sheared cell whose plane spacing (≈ 2 Å) needs three images."""
    from model.crystal import CrystalBatch, concatenate

    sheared = CrystalBatch(
        atomic_numbers=torch.tensor([8, 14, 14]),
        frac_coords=torch.tensor(
            [[0.1, 0.2, 0.3], [0.6, 0.55, 0.9], [0.95, 0.05, 0.5]], dtype=torch.float64
        ),
        lattice=torch.tensor(
            [[[4.0, 0.0, 0.0], [3.6, 2.0, 0.0], [0.3, 0.2, 5.0]]], dtype=torch.float64
        ),
        num_atoms=torch.tensor([3]),
    )
    return concatenate([random_batch(seed=12, num_atoms=(4, 1)), sheared])


@pytest.mark.parametrize("cutoff", [4.5, 7.0])
def test_the_periodic_graph_finds_every_neighbour_within_the_cutoff(cutoff):
    from pymatgen.core import Lattice, Structure

    from model.network.graph import periodic_radius_graph

    batch = skewed_batch()
    graph = periodic_radius_graph(batch, cutoff, max_neighbors=100_000, max_images=8)
    first = (torch.cumsum(batch.num_atoms, 0) - batch.num_atoms).tolist()
    for index in range(batch.num_crystals):
        atoms = (batch.batch == index).nonzero().squeeze(-1)
        structure = Structure(
            Lattice(batch.lattice[index].numpy()),
            ["H"] * len(atoms),
            batch.frac_coords[atoms].numpy(),
        )
        centres, neighbours, images, distances = structure.get_neighbor_list(cutoff)
        expected = {
            (int(c), int(n), tuple(int(round(x)) for x in image)): float(d)
            for c, n, image, d in zip(centres, neighbours, images, distances, strict=True)
        }
        mine = graph.crystal == index
        frac = graph.frac_vectors[mine]
        local_c = graph.center[mine] - first[index]
        local_n = graph.neighbor[mine] - first[index]
        offsets = torch.round(
            frac - (batch.frac_coords[graph.neighbor[mine]] - batch.frac_coords[graph.center[mine]])
        )
        actual = {
            (int(c), int(n), tuple(int(x) for x in k)): float(d)
            for c, n, k, d in zip(local_c, local_n, offsets, graph.lengths[mine], strict=True)
        }
        assert actual.keys() == expected.keys(), index
        for key, distance in expected.items():
            assert actual[key] == pytest.approx(distance, abs=1e-9)
        torch.testing.assert_close(
            graph.vectors[mine], torch.einsum("ei,ij->ej", frac, batch.lattice[index])
        )


def test_the_periodic_graph_keeps_the_nearest_max_neighbors_edges_of_each_atom():
    from model.network.graph import periodic_radius_graph

    batch = skewed_batch()
    full = periodic_radius_graph(batch, 7.0, max_neighbors=100_000, max_images=8)
    capped = periodic_radius_graph(batch, 7.0, max_neighbors=12, max_images=8)
    for centre in range(batch.frac_coords.shape[0]):
        everything = torch.sort(full.lengths[full.center == centre]).values
        kept = torch.sort(capped.lengths[capped.center == centre]).values
        assert kept.shape[0] == min(12, everything.shape[0])
        torch.testing.assert_close(kept, everything[: kept.shape[0]])


def cubic_batatio3(a: float = 4.0):
    """Ideal cubic BaTiO3 (a = 4 Å)."""
    from model.crystal import CrystalBatch

    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return CrystalBatch(
        atomic_numbers=torch.tensor([56, 22, 8, 8, 8]),
        frac_coords=torch.tensor(frac, dtype=torch.float64),
        lattice=(a * torch.eye(3, dtype=torch.float64))[None],
        num_atoms=torch.tensor([5]),
    )


def test_the_neighbour_cap_keeps_whole_shells_when_asked():
    """Ideal cubic BaTiO3 with a cap of 10: Ti's shells are 6 O (2.0 Å), 8 Ba (3.46 Å) and
    6 Ti (4.0 Å); the plain cap keeps 4 of the 8 equivalent Ba, an arbitrary half."""
    from model.network.graph import periodic_radius_graph

    batch = cubic_batatio3()
    ti = 1
    split = periodic_radius_graph(batch, 4.5, max_neighbors=10, max_images=2)
    whole = periodic_radius_graph(batch, 4.5, max_neighbors=10, max_images=2, shells=True)
    split_lengths = torch.sort(split.lengths[split.center == ti]).values
    whole_lengths = torch.sort(whole.lengths[whole.center == ti]).values
    assert split_lengths.shape[0] == 10
    assert whole_lengths.shape[0] == 14
    assert float(whole_lengths[-1]) == pytest.approx(3.0**0.5 * 2.0)
    # every atom keeps whole shells: O has 2 Ti, then 4 Ba and 8 O all at 2.83 Å
    assert [int((whole.center == i).sum()) for i in range(5)] == [12, 14, 14, 14, 14]


def test_with_smooth_outputs_an_edge_crossing_the_cutoff_changes_the_scores_continuously():
    from model.crystal import CrystalBatch

    def scores(smooth: bool, separation: float):
        network = build_network(tiny_config(cutoff=4.5, max_neighbors=50, smooth_outputs=smooth))
        batch = CrystalBatch(  # two atoms in a long cell: one edge, about to leave the graph
            atomic_numbers=torch.tensor([8, 8]),
            frac_coords=torch.tensor(
                [[0.0, 0.0, 0.0], [separation / 12.0, 0.0, 0.0]], dtype=torch.float64
            ),
            lattice=torch.diag(torch.tensor([12.0, 12.0, 12.0], dtype=torch.float64))[None],
            num_atoms=torch.tensor([2]),
        )
        with torch.no_grad():
            return network(batch, torch.tensor([0.3], dtype=torch.float64)).coords

    for smooth in (False, True):
        jump = float((scores(smooth, 4.5 - 1e-6) - scores(smooth, 4.5 + 1e-6)).abs().max())
        assert (jump < 1e-6) == smooth, (smooth, jump)


def test_the_crystal_context_sees_a_supercell_as_the_same_crystal():
    """Type logits depend on atoms and their environments, not on the cell chosen: the
    crystal-wide mean is the same over a cell and its 2x1x1 supercell."""
    from model.crystal import CrystalBatch

    network = build_network(IMPROVED)
    cell = cubic_batatio3(4.6)  # a > cutoff / 2 in every direction, so no edge is lost
    frac = cell.frac_coords
    doubled = CrystalBatch(
        atomic_numbers=cell.atomic_numbers.repeat(2),
        frac_coords=torch.cat(
            [
                frac * torch.tensor([0.5, 1, 1]),
                (frac + torch.tensor([1, 0, 0])) * torch.tensor([0.5, 1, 1]),
            ]
        ).double(),
        lattice=(cell.lattice * torch.tensor([[2.0], [1.0], [1.0]]).double()),
        num_atoms=torch.tensor([10]),
    )
    t = torch.tensor([0.4], dtype=torch.float64)
    with torch.no_grad():
        single = network(cell, t).type_logits
        double = network(doubled, t).type_logits
    close(double[:5], single)
    close(double[5:], single)
