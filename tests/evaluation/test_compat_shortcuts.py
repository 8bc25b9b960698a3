"""Private-API shortcuts (evaluation.compat) give what the public paths they replace give.

Each shortcut runs only on the library versions it was verified on; outside them the public
path runs instead. Both are checked here on real structures.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser

import evaluation.compat.chgnet as chgnet_compat
import evaluation.compat.pymatgen as pymatgen_compat
import evaluation.compat.sevenn as sevenn_compat
from evaluation.compat import VerifiedRange, shortcut_allowed
from evaluation.io.cif import parse_cif_block, split_cif_blocks
from evaluation.matching.core import MatcherSettings, PairFitter, make_matcher
from evaluation.matching.disorder import reduce_like_matcher

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

PEROV_CSV = Path("/work/shared/data/structures/perov_5/val.csv")
OUTSIDE = VerifiedRange("pymatgen-core", "0", "0")


@pytest.fixture(scope="module")
def perov() -> list[Structure]:
    """120 real 5-atom perovskites (perov_5 validation set)."""
    if not PEROV_CSV.exists():
        pytest.skip("perov_5 data not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cifs = pd.read_csv(PEROV_CSV, nrows=120)["cif"]
        return [Structure.from_str(cif, fmt="cif") for cif in cifs]


@pytest.fixture()
def public_pymatgen(monkeypatch):
    """The installed pymatgen treated as unverified: every shortcut takes the public path."""
    monkeypatch.setattr(pymatgen_compat, "VERIFIED", OUTSIDE)
    shortcut_allowed.cache_clear()
    yield
    shortcut_allowed.cache_clear()


# --------------------------------------------------------------------------- version guard


def test_the_installed_versions_are_the_verified_ones():
    assert pymatgen_compat.VERIFIED.mismatch() is None
    assert chgnet_compat.VERIFIED.mismatch() is None
    assert sevenn_compat.VERIFIED.mismatch() is None
    assert sevenn_compat.TORCH_SIM_VERIFIED.mismatch() is None


def test_a_version_outside_the_range_or_a_missing_library_is_named():
    assert "outside the verified range 0..0" in OUTSIDE.mismatch()
    assert VerifiedRange("no-such-distribution", "1", "2").mismatch() == (
        "no-such-distribution is not installed"
    )


def test_outside_the_range_the_shortcut_is_refused_with_a_warning(public_pymatgen, monkeypatch):
    import evaluation.compat

    messages = []
    monkeypatch.setattr(
        evaluation.compat.logger, "warning", lambda text, *args: messages.append(text % args)
    )
    assert not shortcut_allowed(pymatgen_compat.VERIFIED, "a shortcut")
    assert messages == [
        "a shortcut: pymatgen-core "
        + OUTSIDE.installed()
        + " is outside the verified range 0..0; using the public path instead (slower)"
    ]


# --------------------------------------------------------------------------- pymatgen


def test_the_public_reduction_is_the_one_fit_applies(perov):
    matcher = make_matcher()
    for structure in perov[:40]:
        reduced = reduce_like_matcher(structure)
        # fit() on the reduced structure against the original skips nothing it would redo
        assert matcher.fit(reduced, structure, skip_structure_reduction=False)
        assert reduce_like_matcher(reduced).lattice == reduced.lattice


def test_prepared_pairs_get_the_verdict_of_plain_fit(perov):
    # PairFitter reduces once and calls the public fit(..., skip_structure_reduction=True)
    fitter, matcher = PairFitter(MatcherSettings()), make_matcher()
    queries = [s.copy().perturb(0.05, seed=i) for i, s in enumerate(perov[:30])]
    queries += [perov[(i + 1) % 30] for i in range(30)]  # mostly other crystals
    references = perov[:30] * 2
    verdicts = [
        fitter.fit(fitter.prepare(q), fitter.prepare(r))
        for q, r in zip(queries, references, strict=True)
    ]
    assert verdicts == [matcher.fit(q, r) for q, r in zip(queries, references, strict=True)]
    assert any(verdicts) and not all(verdicts)  # both verdicts were exercised


def _cif_blocks(perov: list[Structure]) -> list[str]:
    texts = list(pd.read_csv(PEROV_CSV, nrows=30)["cif"])
    texts += [
        p.read_text()
        for p in sorted(Path("/work/shared/data/structures/lemat").glob("*/*.cif"))[:30]
    ]
    return [block for text in texts for block in split_cif_blocks(text)]


def _assert_same_structure(ours: Structure, theirs: Structure) -> None:
    assert ours.lattice == theirs.lattice
    assert [site.species for site in ours] == [site.species for site in theirs]
    np.testing.assert_array_equal(ours.frac_coords, theirs.frac_coords)
    assert ours.labels == theirs.labels


@pytest.mark.parametrize("verified", [True, False], ids=["p1_clone", "outside_range"])
def test_cif_blocks_read_as_cifparser_reads_them(perov, verified, monkeypatch):
    if not verified:
        monkeypatch.setattr(pymatgen_compat, "VERIFIED", OUTSIDE)
    shortcut_allowed.cache_clear()
    hexagonal = Structure(
        Lattice.hexagonal(3.1, 5.0),
        ["Zn", "O"],
        [[0.33334, 0.66666, 0.0], [-0.25, 0.1, 0.999999]],  # snapped to 1/3, 2/3; wrapped
    )
    blocks = _cif_blocks(perov) + [hexagonal.to(fmt="cif")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            expected = CifParser.from_str(block).parse_structures(primitive=False)[0]
            _assert_same_structure(parse_cif_block(block), expected)
    shortcut_allowed.cache_clear()


# --------------------------------------------------------------------------- chgnet


@pytest.fixture(scope="module")
def chgnet():
    """The shipped CHGNet 0.3.0, loaded once for the chgnet tests."""
    pytest.importorskip("chgnet")
    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):
        return CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False).eval()


def _lco_and_si() -> tuple[Structure, Structure]:
    lco = Structure(
        Lattice.from_parameters(2.9, 3.0, 14.0, 90, 92, 120),
        ["Li", "Co", "O", "O"],
        [[0, 0, 0.5], [0, 0, 0], [1 / 3, 2 / 3, 0.26], [2 / 3, 1 / 3, 0.74]],
    )
    si = Structure(Lattice.cubic(5.5), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    return lco, si


def test_one_pass_chgnet_gradients_equal_the_public_predict_graph(chgnet):
    lco, si = _lco_and_si()
    for i, structure in enumerate([lco, si]):
        structure = structure.perturb(0.1, seed=i)
        graph = chgnet.graph_converter(structure)
        energy, forces, stress = chgnet_compat.energy_and_gradients(chgnet, graph, len(structure))
        public = chgnet_compat._public_energy_and_gradients(chgnet, graph, len(structure))
        assert energy == pytest.approx(public[0], abs=1e-4)
        np.testing.assert_allclose(forces, public[1], atol=2e-4)
        np.testing.assert_allclose(stress, public[2], atol=2e-5)  # eV/Å³
        assert np.abs(stress).max() > 1e-3  # a real stress was compared


def test_batched_chgnet_gradients_equal_the_public_batched_predict_graph(chgnet):
    lco, si = _lco_and_si()
    structures = [s.perturb(0.1, seed=i) for i, s in enumerate([lco, si, lco])]
    graphs = [chgnet.graph_converter(structure) for structure in structures]
    energies, forces, stresses = chgnet_compat.batched_energies_and_gradients(chgnet, graphs)
    public = chgnet_compat._public_batched(chgnet, graphs)
    np.testing.assert_allclose(energies.numpy(), public[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(forces.numpy(), public[1].numpy(), atol=2e-4)
    np.testing.assert_allclose(stresses.numpy(), public[2].numpy(), atol=2e-5)  # eV/Å³
    # and each crystal of the batch gets what it gets alone
    start = 0
    for i, (structure, graph) in enumerate(zip(structures, graphs, strict=True)):
        alone = chgnet_compat.energy_and_gradients(chgnet, graph, len(structure))
        assert energies[i].item() == pytest.approx(alone[0], abs=1e-4)
        np.testing.assert_allclose(forces[start : start + len(structure)], alone[1], atol=2e-4)
        np.testing.assert_allclose(stresses[i], alone[2], atol=2e-5)
        start += len(structure)


# --------------------------------------------------------------------------- sevenn


def test_shipped_sevennet_checkpoints_are_where_the_public_lookup_finds_them():
    pytest.importorskip("sevenn")
    from sevenn.util import pretrained_name_to_path

    from evaluation.compat.sevenn import shipped_checkpoint

    for model in ("7net-0", "7net-l3i5"):
        path = shipped_checkpoint(model)
        assert Path(path).is_file()  # shipped: the public lookup returns it, no download
        assert path == pretrained_name_to_path(model)


def test_torch_sims_sevennet_interface_loads_beside_the_installed_sevenn():
    """torch-sim 0.3.0's SevenNet interface imports a name sevenn 0.13 dropped; restored, it
    gives what sevenn's own ASE calculator gives."""
    pytest.importorskip("sevenn")
    pytest.importorskip("torch_sim")
    import torch
    import torch_sim as ts
    from ase.stress import voigt_6_to_full_3x3_stress
    from sevenn.calculator import SevenNetCalculator
    from sevenn.util import model_from_checkpoint

    from evaluation.compat.sevenn import shipped_checkpoint, torchsim_sevennet_class

    checkpoint = shipped_checkpoint("7net-0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network, _ = model_from_checkpoint(checkpoint)
        model = torchsim_sevennet_class()(network, device="cpu", dtype=torch.float32)
        calc = SevenNetCalculator(model=checkpoint, device="cpu")
    si = Structure(Lattice.cubic(5.5), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    nacl = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structures = [s.perturb(0.1, seed=i) for i, s in enumerate([si, nacl])]
    output = model(ts.io.structures_to_state(structures, torch.device("cpu"), torch.float32))
    start = 0
    for i, structure in enumerate(structures):
        atoms = structure.to_ase_atoms()
        atoms.calc = calc
        n = len(structure)
        assert output["energy"][i].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(
            output["forces"][start : start + n], atoms.get_forces(), atol=1e-4
        )
        np.testing.assert_allclose(
            output["stress"][i], voigt_6_to_full_3x3_stress(atoms.get_stress()), atol=1e-5
        )
        start += n
