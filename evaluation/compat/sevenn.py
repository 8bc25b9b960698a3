"""Where SevenNet's shipped checkpoints are, without ever starting a download; sevenn 0.13.0.

sevenn's public ``util.pretrained_name_to_path`` downloads a checkpoint it cannot find, which
on an offline worker hangs until a network timeout. The file names live in the private
``sevenn._const``; reading them lets a missing checkpoint fail at once, in one line
(:class:`~evaluation.relax.calculators.MLFFUnavailable`). Outside the verified range the public
function is used (it returns the same path when the file is there).
``tests/evaluation/test_compat_shortcuts.py`` compares the two.

:func:`torchsim_sevennet_class` makes torch-sim 0.3.0's SevenNet interface importable beside
sevenn 0.13.0: ``torch_sim.models.sevennet`` imports ``sevenn.calculator.torch_script_type``,
a name sevenn 0.13 no longer has, and without it the module loads with a warning but no
``Collater`` and fails at the first forward pass. (sevenn 0.13's own ``sevenn.torchsim``
interface needs ``torch_sim.neighbors.torchsim_nl``, which torch-sim 0.3.0 does not have.)
The name is only used to recognise a TorchScript-deployed model, so it is restored as
``torch.jit.ScriptModule``, as older sevenn defined it.
"""

from __future__ import annotations

import importlib
import sys

from evaluation.compat import VerifiedRange, shortcut_allowed

VERIFIED = VerifiedRange("sevenn", "0.13.0", "0.13.0")
TORCH_SIM_VERIFIED = VerifiedRange("torch-sim-atomistic", "0.3.0", "0.3.0")

#: Our model names -> the constant in ``sevenn._const`` naming its shipped checkpoint.
SHIPPED_CONSTANTS = {"7net-0": "SEVENNET_0_11Jul2024", "7net-l3i5": "SEVENNET_l3i5"}


def shipped_checkpoint(model: str) -> str:
    """The path sevenn ships ``model``'s checkpoint at (``7net-0`` or ``7net-l3i5``); the file
    may be missing, which the caller checks."""
    if shortcut_allowed(VERIFIED, "sevenn._const"):
        from sevenn import _const

        return str(getattr(_const, SHIPPED_CONSTANTS[model]))
    from sevenn.util import pretrained_name_to_path  # pragma: no cover - other sevenn versions

    return pretrained_name_to_path(model)  # pragma: no cover


def torchsim_sevennet_class() -> type:
    """torch-sim's ``SevenNetModel`` class, importable beside the installed sevenn."""
    import sevenn.calculator

    if not hasattr(sevenn.calculator, "torch_script_type") and shortcut_allowed(
        TORCH_SIM_VERIFIED, "sevenn.calculator.torch_script_type"
    ):
        import torch

        sevenn.calculator.torch_script_type = torch.jit.ScriptModule
        # imported before the name was restored: its module-level imports stopped short
        loaded = sys.modules.get("torch_sim.models.sevennet")
        if loaded is not None and not hasattr(loaded, "Collater"):
            importlib.reload(loaded)
    from torch_sim.models.sevennet import SevenNetModel

    return SevenNetModel
