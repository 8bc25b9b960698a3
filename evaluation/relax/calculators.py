"""Machine-learned force fields as ASE calculators: a model name in, a calculator and its
level-of-theory tag (``mlff:chgnet-0.3.0``) out.

Only weights already on disk are used: CHGNet 0.3.0 and SevenNet (7net-0, 7net-l3i5) ship
inside their packages; matgl models must be local; nothing waits on the network.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from evaluation.compat.chgnet import energy_and_gradients

logger = logging.getLogger(__name__)


class MLFFUnavailable(RuntimeError):  # noqa: N818 - the name the pipeline documents
    """The requested MLFF (package or weights) is not available on this machine."""


# --- calculators ----------------------------------------------------------------------------
_SEVENNET_MODELS = ("7net-0", "7net-l3i5")  # shipped inside the sevenn package
_ALIASES = {
    **dict.fromkeys(("chgnet", "chgnet-0.3.0"), "chgnet"),
    **dict.fromkeys(("sevennet", "sevennet-0", "7net", "7net-0"), "7net-0"),
    **dict.fromkeys(("7net-l3i5", "sevennet-l3i5"), "7net-l3i5"),
}
# An ASE calculator keeps the last structure and results it computed, so it must not be
# shared between threads (two rocket threads of one FireWorks worker would read each other's
# forces): the cache is per thread.
_CALCULATORS = threading.local()
# Loading is serialised: CHGNet's loader prints, and the process-wide stdout swap that silences
# it, done by two threads at once, can leave stdout swallowed for good (a 2-thread worker's
# report lines vanished when both its first shards loaded CHGNet together).
_LOADING = threading.RLock()  # re-entered: a calculator's loader loads its model


def canonical_model_name(name: str) -> str:
    """``"sevennet"`` -> ``"7net-0"``, ``"CHGNet"`` -> ``"chgnet"``; matgl/mattersim kept."""
    lowered = name.strip().lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    if lowered.startswith("matgl:") or lowered.startswith("mattersim"):
        return name.strip()
    raise ValueError(
        f"unknown MLFF {name!r}: use 'chgnet', 'sevennet'/'7net-0', '7net-l3i5', "
        "'matgl:<model directory or name>' or 'mattersim'"
    )


def load_calculator(name: str, device: str = "cpu") -> tuple[Calculator, str]:
    """An ASE calculator for ``name`` and its level-of-theory tag, cached per thread.

    Parameters
    ----------
    name
        ``"chgnet"`` (CHGNet 0.3.0), ``"sevennet"``/``"7net-0"``, ``"7net-l3i5"``,
        ``"matgl:<path-or-name>"`` (local weights only) or ``"mattersim"``.
    device
        ``"cpu"`` or ``"cuda"``.

    Raises
    ------
    MLFFUnavailable
        The package or its weights are not on this machine (raised at once, no download).
    """
    key = (canonical_model_name(name), device)
    loaded: dict[tuple[str, str], tuple[Calculator, str]] = _CALCULATORS.__dict__
    if key not in loaded:
        model = key[0]
        with _LOADING:
            if model == "chgnet":
                loaded[key] = _load_chgnet(device)
            elif model in _SEVENNET_MODELS:
                loaded[key] = _load_sevennet(model, device)
            elif model.lower().startswith("matgl:"):
                loaded[key] = _load_matgl(model.split(":", 1)[1], device)
            else:
                loaded[key] = _load_mattersim(device)
    return loaded[key]


def chgnet_model(device: str) -> tuple[Any, str]:
    """The shipped CHGNet 0.3.0 model on ``device`` and its level-of-theory tag, loaded once per
    thread; both engines (the ASE calculator here, the batched torch-sim interface) use it."""
    key = ("chgnet-model", device)
    loaded: dict[tuple[str, str], tuple[Any, str]] = _CALCULATORS.__dict__
    if key not in loaded:
        from chgnet.model import CHGNet

        with _LOADING, contextlib.redirect_stdout(io.StringIO()):  # it prints device and size
            model = CHGNet.load(model_name="0.3.0", use_device=device, verbose=False)
        loaded[key] = (model, f"mlff:chgnet-{model.version or '0.3.0'}")
    return loaded[key]


def _load_chgnet(device: str) -> tuple[Calculator, str]:
    model, tag = chgnet_model(device)
    return CHGNetInferenceCalculator(model, device), tag


class CHGNetInferenceCalculator(Calculator):
    """CHGNet energy, forces and stress (eV/Å³) with one backward pass and no training graph.

    chgnet's own ``CHGNetCalculator`` differentiates the energy twice (forces, then stress),
    each time with ``create_graph=True`` as training needs, and also predicts magnetic moments.
    Here the energy is differentiated once with respect to positions and strain together:
    about 2x faster per call on one CPU thread, same numbers to float32 round-off (tested
    against ``CHGNetCalculator``). The one-pass gradient uses chgnet internals, so it lives in
    :mod:`evaluation.compat.chgnet` behind a version guard. ``model`` keeps the CHGNet for
    batched single points.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Any, device: str = "cpu") -> None:
        super().__init__()
        self.model = model.to(device).eval()
        self.model.graph_converter.set_isolated_atom_response("warn")  # as CHGNetCalculator
        self.device = device

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        from pymatgen.io.ase import AseAtomsAdaptor

        super().calculate(atoms, properties, system_changes)
        model = self.model
        graph = model.graph_converter(AseAtomsAdaptor.get_structure(self.atoms)).to(self.device)
        energy, forces, stress = energy_and_gradients(model, graph, len(self.atoms))
        self.results = {
            "energy": energy,
            "forces": forces,
            "stress": full_3x3_to_voigt_6_stress(stress),
        }
        self.results["free_energy"] = self.results["energy"]


def _load_sevennet(model: str, device: str) -> tuple[Calculator, str]:
    from sevenn.calculator import SevenNetCalculator

    from evaluation.compat.sevenn import shipped_checkpoint

    checkpoint = shipped_checkpoint(model)
    if not os.path.exists(checkpoint):  # sevenn would otherwise try to download it
        raise MLFFUnavailable(f"SevenNet checkpoint for {model} is missing at {checkpoint}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor-product accelerator" on CPU
        calc = SevenNetCalculator(model=checkpoint, device=device)
    return calc, f"mlff:sevennet-{model}"


_MATGL_FILES = ("model.json", "model.pt", "state.pt")  # what matgl's ``save`` writes
_MATGL_HINT = (
    "matgl weights are never downloaded here: on a machine with network access run "
    "`matgl.load_model('<name>').save('<dir>')`, copy <dir> to this machine and pass "
    "'matgl:<dir>' (a folder with model.json, model.pt and state.pt)"
)


def _matgl_model_dir(target: str) -> Path:
    """The local matgl model directory ``target`` names, checked before matgl is imported.

    Raises
    ------
    MLFFUnavailable
        ``target`` is a pretrained name rather than a folder on this machine, or the folder
        lacks one of the files matgl's ``save`` writes.
    """
    path = Path(target).expanduser()
    if not path.exists():
        if target.startswith((".", "/", "~")) or os.sep in target:
            raise MLFFUnavailable(f"no matgl model at {target!r}: {_MATGL_HINT}")
        raise MLFFUnavailable(
            f"matgl model {target!r} is not a local model directory: {_MATGL_HINT}"
        )
    missing = [name for name in _MATGL_FILES if not (path / name).is_file()]
    if missing:
        raise MLFFUnavailable(
            f"{str(path)!r} is not a matgl model directory (missing {', '.join(missing)}): "
            f"{_MATGL_HINT}"
        )
    return path.resolve()


def _load_matgl(target: str, device: str) -> tuple[Calculator, str]:
    """matgl's ASE calculator for the potential saved in the directory ``target``.

    The directory is what ``Potential.save(dir)`` writes. Pretrained names are refused at once
    (no download); the stress is reported in eV/Å³, as ASE's cell filters expect.
    """
    path = _matgl_model_dir(target)
    if importlib.util.find_spec("matgl") is None:
        raise MLFFUnavailable(
            f"matgl is not installed, cannot load {str(path)!r}: "
            "`pip install 'crystalforge[matgl]'`"
        )
    import matgl
    from matgl.apps.pes import Potential
    from matgl.ext.ase import PESCalculator

    try:  # every file is local, so matgl reads them and never asks the Hugging Face Hub
        potential = matgl.load_model(path)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise MLFFUnavailable(
            f"matgl could not load the model at {str(path)!r}: {type(cause).__name__}: {cause}"
        ) from exc
    if not isinstance(potential, Potential):
        raise MLFFUnavailable(
            f"the matgl model at {str(path)!r} is a {type(potential).__name__}, not an "
            "interatomic potential (matgl.apps.pes.Potential)"
        )
    potential = potential.to(device).eval()  # eval: no double-backward graph for forces
    return PESCalculator(potential, stress_unit="eV/A3"), f"mlff:matgl-{path.name}"


def _load_mattersim(device: str) -> tuple[Calculator, str]:
    if importlib.util.find_spec("mattersim") is None:
        raise MLFFUnavailable(
            "mattersim is not installed: CrystalForge does not install it (it pins torch and "
            "torchvision versions that conflict with this environment); use 'chgnet' or "
            "'sevennet', or run MatterSim in a separate environment"
        )
    from mattersim.forcefield import MatterSimCalculator  # pragma: no cover - not installed

    try:  # pragma: no cover
        return MatterSimCalculator(device=device), "mlff:mattersim-v1.0.0-1m"
    except Exception as exc:  # pragma: no cover - weights not local
        raise MLFFUnavailable(f"mattersim could not load its weights: {exc}") from exc
