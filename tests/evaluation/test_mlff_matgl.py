"""matgl potentials from a local model directory; pretrained names fail fast, offline.

The model is a tiny, randomly initialised TensorNet saved with matgl's own ``save`` and read
back through :func:`evaluation.relax.calculators.load_calculator`: it checks the loading and
relaxation path, not the physics (no matgl weights can be downloaded here).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from evaluation.relax.calculators import MLFFUnavailable, load_calculator
from evaluation.relax.engine import relax_structures

DIAMOND = [
    [0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
    [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25],
]  # fmt: skip
NO_MATGL = "matgl is an optional extra: pip install -c constraints.txt -e '.[matgl]'"


def _si() -> Structure:
    return Structure(Lattice.cubic(5.5), ["Si"] * 8, DIAMOND).perturb(0.05, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random TensorNet potential for Na, Cl and Si, saved the way matgl saves models."""
    pytest.importorskip("matgl", reason=NO_MATGL)
    import torch
    from matgl.apps.pes import Potential
    from matgl.models import TensorNet

    torch.manual_seed(0)
    model = TensorNet(
        element_types=("Na", "Cl", "Si"), units=16, nblocks=1, num_rbf=8, cutoff=4.0,
        is_intensive=False,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("matgl") / "tiny-tensornet"
    Potential(model=model).save(path)
    return path


def test_load_saved_potential(model_dir: Path) -> None:
    from matgl.ext.ase import PESCalculator

    calc, tag = load_calculator(f"matgl:{model_dir}")
    assert isinstance(calc, PESCalculator)
    assert tag == "mlff:matgl-tiny-tensornet"
    assert load_calculator(f"matgl:{model_dir}")[0] is calc  # cached per process


def test_stress_in_ase_units(model_dir: Path) -> None:
    """ASE's cell filters need eV/Å³; matgl's calculator defaults to GPa (160x larger)."""
    from ase.build import bulk
    from ase.calculators.fd import calculate_numerical_stress

    calc, _ = load_calculator(f"matgl:{model_dir}")
    atoms = bulk("Si", "diamond", 4.8, cubic=True)  # compressed: a clear, finite stress
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    numerical = calculate_numerical_stress(atoms, eps=1e-3, force_consistent=False)
    np.testing.assert_allclose(atoms.get_stress(), numerical, rtol=0.05, atol=2e-6)


def test_relax_with_saved_potential(model_dir: Path) -> None:
    model = f"matgl:{model_dir}"
    # A random model's forces are small: a tight fmax makes the optimizer really take steps.
    (result,) = relax_structures([_si()], model=model, fmax=1e-6, max_steps=5, progress=False)
    assert result.status in ("ok", "not_converged"), result.reason
    assert np.isfinite(result.energy) and np.isfinite(result.max_force)
    assert result.level_of_theory == "mlff:matgl-tiny-tensornet"
    assert result.n_steps > 0 and len(result.trajectory.energies) > 1
    assert [str(s) for s in result.structure.species] == ["Si"] * 8
    assert 0.5 < result.trajectory.volume_ratio < 2.0  # stress read in eV/Å³, not GPa


def test_pretrained_name_fails_fast_offline() -> None:
    start = time.perf_counter()
    with pytest.raises(MLFFUnavailable, match="never downloaded.*matgl:<dir>"):
        load_calculator("matgl:M3GNet-MP-2021.2.8-PES")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("missing", ["state.pt", "model.json"])
def test_incomplete_directory_is_named(model_dir: Path, tmp_path: Path, missing: str) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.json", "model.pt", "state.pt"):
        if name != missing:
            (broken / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(MLFFUnavailable, match=f"{re.escape(str(broken))}.*missing {missing}"):
        load_calculator(f"matgl:{broken}")


def test_corrupt_directory_is_named(tmp_path: Path) -> None:
    pytest.importorskip("matgl", reason=NO_MATGL)
    broken = tmp_path / "corrupt"
    broken.mkdir()
    for name in ("model.json", "model.pt", "state.pt"):
        (broken / name).write_text("not a model")
    with pytest.raises(MLFFUnavailable, match=re.escape(f"could not load the model at '{broken}'")):
        load_calculator(f"matgl:{broken}")


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(MLFFUnavailable, match="no matgl model at"):
        load_calculator(f"matgl:{tmp_path / 'nowhere'}")
