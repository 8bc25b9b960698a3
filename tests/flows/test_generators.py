"""The baseline generators: chemical-system parsing, random structure search, ion substitution."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from evaluation.matching.index import find_duplicates
from evaluation.paths import PROJECT_ROOT, data_dir
from evaluation.records import CrystalRecord
from flows.generators import (
    ATOM_COUNT_RANGES,
    generate_rss,
    generate_substitutions,
    load_lambda_table,
    load_prototypes,
    parse_chemsys,
    point_group_order,
    require_arity,
    space_groups_with_symmops,
    tuned_minsep,
)
from flows.generators import rss as rss_module

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# ------------------------------------------------------------------------------ chemsys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Li-Co-O", ("Co", "Li", "O")),
        (" O - Li ", ("Li", "O")),
        ("Na", ("Na",)),
        ("K-Mo-O-P-Sr", ("K", "Mo", "O", "P", "Sr")),
    ],
)
def test_parse_chemsys_normalises(text, expected):
    assert parse_chemsys(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Li--O", "empty element at position 2 in chemical system 'Li--O'"),
        ("Li-Xx-O", "unknown element 'Xx' in chemical system 'Li-Xx-O'"),
        ("Li-O-Li", "element 'Li' appears twice"),
        ("Li-1-O", "'1' is not an element symbol"),
        ("li-O", "'li' is not an element symbol"),
        ("", "empty chemical system"),
        ("H-He-Li-Be-B-C-N-O-F", "has 9 elements; at most 8"),
    ],
)
def test_parse_chemsys_rejects_with_the_token(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_chemsys(text)
    assert "\n" not in str(error.value)


def test_require_arity_names_generator_and_system():
    require_arity(("Li", "O"), 2, "rss")
    with pytest.raises(ValueError) as error:
        require_arity(("Li",), 2, "rss")
    assert str(error.value) == "the rss generator needs at least 2 elements, got 1 (Li)"


# ---------------------------------------------------------------------------------- RSS


@pytest.fixture(scope="module")
def rss_li_co_o():
    return generate_rss("Li-Co-O", 12, seed=7)


def test_point_group_orders_agree_with_pyxtal():
    from pyxtal.symmetry import Group

    for number in range(1, 231):
        general = Group(number)[0]
        n_centring = sum(np.allclose(op.rotation_matrix, np.eye(3)) for op in general.ops)
        assert point_group_order(number) == len(general.ops) // n_centring, number
    groups = space_groups_with_symmops(2, 4)
    assert len(groups) == 57 and 1 not in groups and 47 not in groups and 143 in groups


def test_rss_composition_counts_and_provenance(rss_li_co_o):
    records, failures = rss_li_co_o
    assert failures == [] and len(records) == 12
    ranges = ATOM_COUNT_RANGES[3]
    for index, record in enumerate(records):
        props = record.properties
        assert record.id == f"rss-7-{index}" and record.source == "rss"
        assert record.chemsys == "Co-Li-O"  # only and all the system's elements
        n_atoms = len(record.structure)
        assert props["n_atoms"] == n_atoms and list(props["atoms_per_cell_range"]) in map(
            list, ranges
        )
        low, high = props["atoms_per_cell_range"]
        assert low <= n_atoms <= high
        for key in ("generator", "seed", "index", "space_group", "minsep", "params"):
            assert key in props
        assert (props["generator"], props["seed"], props["index"]) == ("rss", 7, index)
        json.dumps(props)  # provenance must survive every writer


def test_rss_minimum_separations(rss_li_co_o):
    for record in rss_li_co_o.records:
        table = record.properties["minsep_pairs"]
        assert 0.7 <= record.properties["minsep"] == min(table.values()) <= 3.0
        structure = record.structure
        centres, neighbours, _, distances = structure.get_neighbor_list(
            max(table.values()), exclude_self=True
        )
        for i, j, distance in zip(centres, neighbours, distances, strict=True):
            pair = "-".join(sorted((structure[i].specie.symbol, structure[j].specie.symbol)))
            assert distance >= table[pair] - 1e-6, (record.id, pair, distance)


def test_rss_symmetry_in_symmops(rss_li_co_o):
    for record in rss_li_co_o.records:
        requested = record.properties["space_group"]
        assert requested in space_groups_with_symmops(2, 4)
        assert 2 <= point_group_order(requested) <= 4
        found = SpacegroupAnalyzer(record.structure, symprec=0.1).get_space_group_number()
        # The crystal has at least the requested symmetry: its point group contains that one.
        assert point_group_order(found) % point_group_order(requested) == 0, record.id


def test_rss_reproducible_per_candidate(rss_li_co_o):
    again = generate_rss("Li-Co-O", 3, seed=7)
    for first, second in zip(rss_li_co_o.records[:3], again.records, strict=True):
        assert first.structure == second.structure
        assert first.properties == second.properties
    other = generate_rss("Li-Co-O", 3, seed=8)
    assert all(
        a.structure != b.structure for a, b in zip(again.records, other.records, strict=True)
    )


def test_rss_binary_and_atom_count_override():
    records, failures = generate_rss(["Na", "Cl"], 4, seed=1, atoms_per_cell=(4, 6))
    assert failures == []
    for record in records:
        assert record.chemsys == "Cl-Na" and 4 <= len(record.structure) <= 6
    assert ATOM_COUNT_RANGES[2] == ((2, 6), (7, 12), (13, 20))


def test_rss_rejects_bad_arguments():
    with pytest.raises(
        ValueError, match=r"the rss generator needs at least 2 elements, got 1 \(Li\)"
    ):
        generate_rss("Li", 1, seed=0)
    with pytest.raises(ValueError, match="atoms_per_cell"):
        generate_rss("Li-Co-O", 1, seed=0, atoms_per_cell=(2, 5))
    with pytest.raises(ValueError, match="seed"):
        generate_rss("Li-O", 1, seed=-1)
    with pytest.raises(ValueError, match="symmops"):
        generate_rss("Li-O", 1, seed=0, symmops=(4, 2))


def test_rss_reports_candidates_it_cannot_make(monkeypatch):
    monkeypatch.setattr(rss_module, "_hosting_groups", lambda counts, groups: ())
    records, failures = generate_rss("Li-O", 2, seed=0, max_attempts_per_candidate=3)
    assert records == [] and len(failures) == 2
    assert failures[0].startswith("rss-0-0: no structure in 3 attempts (last: no space group")


@pytest.mark.slow
def test_rss_64_ternary_candidates_are_fast():
    started = time.perf_counter()
    records, failures = generate_rss("Li-Co-O", 64, seed=0)
    assert len(records) + len(failures) == 64 and len(records) >= 60
    assert time.perf_counter() - started < 30


# ------------------------------------------------------------------------- substitution


def test_shipped_lambda_table_and_prototypes_load():
    table = load_lambda_table()
    assert len(table) == 6694 and table[0] == ["Ac3+", "Ac3+", -0.856428]
    prototypes = load_prototypes()
    assert len(prototypes) > 1000
    assert {p.source for p in prototypes} == {
        "aflow-encyclopedia",
        "pymatgen-aflow",
        "robocrys-minerals",
    }
    labels = [p.label for p in prototypes]
    assert len(set(labels)) == len(labels)
    for prototype in prototypes:
        assert prototype.structure.is_ordered and prototype.properties["prototype"]
        # AFLOW puts NH4, H2O, ... on one site; those prototypes must not ship as atoms.
        assert "Nh" not in prototype.structure.composition


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder not present")
def test_shipped_lambda_table_is_the_published_one():
    shipped = (data_dir() / "priors" / "substitution_lambda.json").read_bytes()
    assert shipped == (SHARED_DATA / "priors" / "substitution_lambda.json").read_bytes()


@pytest.fixture(scope="module")
def li_co_o_substitutions():
    return generate_substitutions("Li-Co-O")


def _assert_in_system_unique_with_provenance(records: list[CrystalRecord], chemsys: str):
    assert records
    for index, record in enumerate(records):
        assert record.chemsys == chemsys  # every element of the system and no other
        assert record.id == f"sub-{index}" and record.source == "substitution"
        props = record.properties
        assert props["generator"] == "substitution" and props["index"] == index
        assert ":" in props["parent"] and props["prototype"]
        target = {species.rstrip("0123456789+-") for species in props["species_map"].values()}
        assert "-".join(sorted(target)) == chemsys
        assert props["probability"] >= props["threshold"]
        json.dumps(props)
    probabilities = [r.properties["probability"] for r in records]
    assert probabilities == sorted(probabilities, reverse=True)
    assert find_duplicates([r.structure for r in records]) == [None] * len(records)


def test_substitution_li_co_o(li_co_o_substitutions):
    _assert_in_system_unique_with_provenance(li_co_o_substitutions, "Co-Li-O")
    assert "LiCoO2" in {r.formula for r in li_co_o_substitutions}


def test_substitution_na_cl():
    records = generate_substitutions("Na-Cl")
    _assert_in_system_unique_with_provenance(records, "Cl-Na")
    assert "NaCl" in {r.formula for r in records}


def test_substitution_is_deterministic_and_capped(li_co_o_substitutions):
    capped = generate_substitutions("Co-Li-O", max_candidates=3)
    assert [r.properties for r in capped] == [r.properties for r in li_co_o_substitutions[:3]]
    assert all(
        a.structure == b.structure for a, b in zip(capped, li_co_o_substitutions, strict=False)
    )


def test_substitution_impossible_system_is_empty():
    assert generate_substitutions("He-Ne") == []


def test_substitution_rejects_bad_systems():
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        generate_substitutions("Na-Xx")
    with pytest.raises(ValueError, match="substitution generator needs at least 2 elements"):
        generate_substitutions("Na")


def test_substitution_from_given_prototype_maps_species_and_rescales():
    kbr = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5] * 3]
    )
    prototype = CrystalRecord(kbr, "rocksalt", "test", {"prototype": "rock salt"})
    records = generate_substitutions("Na-Cl", prototypes=[prototype], reference=[])
    assert len(records) == 1
    (record,) = records
    assert record.formula == "NaCl" and record.properties["parent"] == "test:rocksalt"
    assert record.properties["species_map"] == {"Br-": "Cl-", "K+": "Na+"}
    assert record.properties["prototype"] == "rock salt"
    # Smaller ions, smaller cell: Na+ and Cl- are smaller than K+ and Br-.
    assert record.structure.volume < kbr.volume
    assert not any(getattr(s, "oxi_state", None) for s in record.structure.species)


@pytest.mark.slow
def test_build_prototypes_is_deterministic(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip("shared data folder not present")
    spec = importlib.util.spec_from_file_location(
        "build_prototypes", PROJECT_ROOT / "scripts" / "build_prototypes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_prototypes(SHARED_DATA, tmp_path)
    shipped = Path(data_dir()) / "prototypes" / "prototypes.jsonl.gz"
    assert (tmp_path / "prototypes" / "prototypes.jsonl.gz").read_bytes() == shipped.read_bytes()


# ------------------------------------------------------------- the benchmark's RSS and substitution


def test_tuned_minsep_is_the_shortest_distance_of_each_pair_clamped():
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    # Na-Cl 2.82 Å; Na-Na and Cl-Cl 3.99 Å lie beyond AIRSS's 3 Å bound and are left out
    assert tuned_minsep([rocksalt]) == {"Cl-Na": pytest.approx(2.82)}
    squeezed = Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.15, 0, 0]])
    assert tuned_minsep([rocksalt, squeezed])["Cl-Na"] == 0.7  # 0.45 Å, clamped to MINSEP's floor
    with pytest.raises(ValueError, match="no relaxed structures"):
        tuned_minsep([])


def test_rss_round_two_respects_the_tuned_separations():
    tuned = {"Co-Li": 2.4, "Co-O": 1.8, "Li-O": 1.9, "O-O": 2.3}
    records, failures = generate_rss("Li-Co-O", 6, seed=3, pair_minsep=tuned)
    assert failures == [] and len(records) == 6
    for record in records:
        table = record.properties["minsep_pairs"]
        assert {pair: table[pair] for pair in tuned} == tuned  # tuned pairs used as given
        assert record.properties["params"]["tuned_minsep"] == tuned
        structure = record.structure
        centres, neighbours, _, distances = structure.get_neighbor_list(3.0, exclude_self=True)
        for i, j, distance in zip(centres, neighbours, distances, strict=True):
            pair = "-".join(sorted((structure[i].specie.symbol, structure[j].specie.symbol)))
            assert distance >= table[pair] - 1e-6


def test_pyxtal_lattice_attempts_are_capped_inside_rss_and_restored_after():
    from pyxtal.crystal import random_crystal
    from pyxtal.tolerance import Tol_matrix

    impossible = Tol_matrix(("Na", "Cl", 6.0), ("Na", "Na", 6.0), ("Cl", "Cl", 6.0))
    started = time.perf_counter()
    with rss_module._lattice_attempts_capped(2):
        crystal = random_crystal(3, 2, ["Na", "Cl"], [4, 4], 1.0, tm=impossible)
    assert not crystal.valid
    assert crystal.lattice_attempts == 2 and crystal.cycle1 == 1  # pyxtal's own: 40 lattices
    assert time.perf_counter() - started < 10
    assert "lattice_attempts" not in vars(random_crystal)  # pyxtal untouched afterwards
    records, _ = generate_rss("Li-O", 1, seed=0, lattice_attempts=3)
    assert records[0].properties["params"]["pyxtal_lattice_attempts"] == 3
    with pytest.raises(ValueError, match="lattice_attempts must be at least 1"):
        generate_rss("Li-O", 1, seed=0, lattice_attempts=0)


def test_rss_shares_pyxtals_image_check_tolerance_and_draws_exactly_the_same(monkeypatch):
    import contextlib

    import pyxtal.symmetry
    from pyxtal.operations import check_images

    with rss_module._image_check_tolerance_shared():
        assert pyxtal.symmetry.check_images is not check_images  # the guard still takes
    assert pyxtal.symmetry.check_images is check_images  # pyxtal untouched afterwards
    tuned = {"Li-Li": 2.6, "Li-O": 1.9, "O-O": 2.5}  # round-2 style: many Wyckoff merges
    shared = generate_rss("Li-O", 3, seed=5, pair_minsep=tuned)
    monkeypatch.setattr(rss_module, "_image_check_tolerance_shared", contextlib.nullcontext)
    built_per_call = generate_rss("Li-O", 3, seed=5, pair_minsep=tuned)
    assert [r.structure for r in shared.records] == [r.structure for r in built_per_call.records]
    assert [r.properties for r in shared.records] == [r.properties for r in built_per_call.records]


def test_substitution_enumerating_all_maps_reaches_systems_the_lambda_model_cannot():
    assert generate_substitutions("Li-Pr-Te", max_candidates=8) == []  # no charge-balanced map
    records = generate_substitutions("Li-Pr-Te", max_candidates=8, enumerate_all=True, seed=1)
    assert len(records) == 8
    assert {r.chemsys for r in records} == {"Li-Pr-Te"}
    assert find_duplicates([r.structure for r in records]) == [None] * 8
    assert all(r.properties["mode"] == "all" and r.properties["probability"] == 0 for r in records)
    again = generate_substitutions("Li-Pr-Te", max_candidates=8, enumerate_all=True, seed=1)
    assert [r.properties for r in again] == [r.properties for r in records]
    other = generate_substitutions("Li-Pr-Te", max_candidates=8, enumerate_all=True, seed=2)
    assert [r.properties["parent"] for r in other] != [r.properties["parent"] for r in records]


def test_substitution_enumerating_all_puts_the_probable_maps_first(li_co_o_substitutions):
    every = generate_substitutions("Li-Co-O", max_candidates=40, enumerate_all=True)
    probable = [r for r in every if r.properties["probability"] > 0]
    assert len(probable) == len(li_co_o_substitutions)
    first = [r.properties["probability"] > 0 for r in every]
    assert first == [True] * len(probable) + [False] * (40 - len(probable))  # then plain maps
    assert [r.formula for r in probable] == [r.formula for r in li_co_o_substitutions]
    assert len(every) == 40


def test_a_campaign_cap_on_source_sites_reaches_the_substitution_generator():
    from flows.generate import SubstitutionGeneratorMaker
    from pipeline.campaign import CampaignConfig

    config = CampaignConfig(
        generator="substitution", substitution_mode="all", substitution_max_sites=20
    )
    maker = SubstitutionGeneratorMaker.from_settings(config.generator_settings())
    assert maker.options == {"enumerate_all": True, "max_sites": 20}
    default = CampaignConfig(generator="substitution").generator_settings()
    assert SubstitutionGeneratorMaker.from_settings(default).options == {}
