"""Training-data statistics the model needs at sampling time, stored as module buffers so that
every checkpoint carries them: the average volume per atom ``c`` (the lattice prior's density,
A.7.2), the number-of-atoms distribution (D.1.3) and the element set. Imports torch only."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.crystal import MASK_CLASS, NUM_CLASSES

DEFAULT_VOLUME_PER_ATOM = 17.0  # Å³; replaced by the training data's value before training


class DataStatistics(nn.Module):
    """Buffers: ``volume_per_atom`` (scalar, Å³), ``num_atoms_counts [max_atoms + 1]``,
    ``element_counts [NUM_CLASSES]`` (by diffusion class; the [MASK] entry stays 0) and
    ``lattice_spread`` κ (Å): the rms deviation of training lattices from ``μ(n) I`` per
    ``n^(1/3)``, used by the lattice score's analytic prior term."""

    def __init__(self, max_atoms: int) -> None:
        super().__init__()
        self.register_buffer(
            "volume_per_atom", torch.tensor(DEFAULT_VOLUME_PER_ATOM, dtype=torch.float64)
        )
        self.register_buffer("num_atoms_counts", torch.zeros(max_atoms + 1, dtype=torch.float64))
        self.register_buffer("element_counts", torch.zeros(NUM_CLASSES, dtype=torch.float64))
        self.register_buffer("lattice_spread", torch.tensor(1.0, dtype=torch.float64))

    @property
    def max_atoms(self) -> int:
        return self.num_atoms_counts.shape[0] - 1

    @property
    def is_fitted(self) -> bool:
        return bool(self.num_atoms_counts.sum() > 0)

    @torch.no_grad()
    def fit(self, atomic_numbers: Tensor, lattice: Tensor, num_atoms: Tensor) -> None:
        """Set the statistics from a whole training set (flat tensors, as in a tensor file)."""
        if int(num_atoms.max()) > self.max_atoms:
            raise ValueError(
                f"training data has a crystal with {int(num_atoms.max())} atoms; "
                f"this model allows at most {self.max_atoms} (max_atoms in the config)"
            )
        volumes = torch.linalg.det(lattice.double()).abs()
        self.volume_per_atom.fill_(float(volumes.sum() / num_atoms.sum()))
        # κ with E‖L_0 − μ(n) I‖² = 9 κ² n^(2/3): the spread of the data around the prior mean
        n = num_atoms.double()
        mu = (n * self.volume_per_atom) ** (1.0 / 3.0)
        deviation = lattice.double() - mu[:, None, None] * torch.eye(3, dtype=torch.float64)
        self.lattice_spread.fill_(
            float(((deviation**2).sum((-1, -2)) / (9 * n ** (2.0 / 3.0))).mean().sqrt())
        )
        self.num_atoms_counts.copy_(
            torch.bincount(num_atoms, minlength=self.max_atoms + 1).double()
        )
        self.element_counts.zero_()
        self.element_counts[: NUM_CLASSES - 1] = torch.bincount(
            atomic_numbers - 1, minlength=NUM_CLASSES - 1
        )[: NUM_CLASSES - 1].double()

    def allowed_classes(self) -> Tensor:
        """``bool [NUM_CLASSES]``: species seen in training (all species if unfitted)."""
        allowed = self.element_counts > 0
        if not bool(allowed.any()):
            allowed = torch.ones_like(allowed)
        allowed[MASK_CLASS] = False
        return allowed

    def sample_num_atoms(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` atom counts drawn from the training distribution."""
        if not self.is_fitted:
            raise ValueError("the model has no number-of-atoms distribution; pass num_atoms")
        weights = self.num_atoms_counts.float().cpu()
        drawn = torch.multinomial(weights, count, replacement=True, generator=generator)
        return drawn.to(self.num_atoms_counts.device)
