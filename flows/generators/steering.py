"""What steers one generation request: property targets, an exact composition, the element mask,
and the atom counts they imply. Built once per request by :func:`steering_plan`, before any
sampling, so every bad option fails first with a message that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from model.checkpoint import LoadedCheckpoint
    from model.properties import ConditionBatch, PropertySpec, Target


@dataclass
class SteeringPlan:
    """The resolved request (see :func:`steering_plan`)."""

    specs: list[PropertySpec] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    allowed: torch.Tensor | None = None
    species: tuple[str, ...] | None = None
    formula: str | None = None
    num_atoms: int | None = None
    atom_counts: Callable[[int, torch.Generator], torch.Tensor] | None = None
    element_mask: bool = True

    def condition(self, size: int) -> ConditionBatch | None:
        """The embedded targets for ``size`` crystals (None when unconditioned)."""
        if not self.targets:
            return None
        from model.properties import embed_conditions

        return embed_conditions(
            self.specs, {name: [target] * size for name, target in self.targets.items()}, size
        )

    def fixed_types(self, size: int) -> torch.Tensor | None:
        """Atomic numbers of ``size`` crystals of the requested composition (or None)."""
        if self.species is None:
            return None
        import torch
        from pymatgen.core.periodic_table import Element

        one_cell = torch.tensor([Element(symbol).Z for symbol in self.species], dtype=torch.long)
        return one_cell.repeat(size)

    def provenance(self, guidance: float) -> dict[str, Any]:
        """What each sample records about how it was steered."""
        out: dict[str, Any] = {}
        if self.texts:
            out["conditions"] = dict(self.texts)
            out["guidance"] = guidance
            out["element_mask"] = self.element_mask and "chemical_system" in self.targets
        if self.species is not None:
            out["composition"] = self.formula
        return out


def steering_plan(
    loaded: LoadedCheckpoint,
    conditions: Mapping[str, str],
    composition: str | None,
    num_atoms: int | None,
    elements: Sequence[str] | None,
    element_mask: bool,
) -> SteeringPlan:
    """Check and resolve a request against the checkpoint ``loaded``.

    Raises
    ------
    ValueError
        A property the checkpoint was not tuned on, an unreadable target, a composition that
        does not fit, a composition combined with ``elements`` or a chemical-system condition
        it contradicts, or ``num_atoms`` that contradicts the composition.
    """

    from flows.generators.mattergen import allowed_species, parse_composition
    from model.finetune import specs_of
    from model.property_data import LabelError, parse_target

    specs = specs_of(loaded.payload)
    by_name = {spec.name: spec for spec in specs}
    plan = SteeringPlan(specs=specs, element_mask=element_mask)
    for name, text in conditions.items():
        if name not in by_name:
            tuned = ", ".join(by_name) or "no property (an unconditional model)"
            raise ValueError(
                f"--condition {name}: {loaded.path.name} is fine-tuned on {tuned}; "
                "pick a checkpoint tuned on it or leave --checkpoint out"
            )
        try:
            plan.targets[name] = parse_target(by_name[name], text)
        except (LabelError, ValueError) as error:
            message = str(error)
            raise ValueError(
                message if message.startswith("--condition") else f"--condition {message}"
            ) from None
        plan.texts[name] = text
    system = plan.targets.get("chemical_system")
    symbols = _symbols(system) if system is not None else None
    if composition is not None:
        plan.species = parse_composition(composition, loaded.config.max_atoms)
        plan.formula = composition.strip()
        if num_atoms is not None and num_atoms != len(plan.species):
            raise ValueError(
                f"--num-atoms {num_atoms} contradicts --composition {composition} "
                f"({len(plan.species)} atoms per cell)"
            )
        if elements:
            raise ValueError("--composition fixes the elements; leave --elements out")
        if symbols is not None and set(plan.species) != set(symbols):
            raise ValueError(
                f"--composition {composition} is not in the chemical system {'-'.join(symbols)}"
            )
        plan.num_atoms = len(plan.species)
    else:
        plan.num_atoms = num_atoms
    allowed = set(elements or [])
    if symbols is not None and element_mask:
        allowed = set(symbols) if not allowed else allowed & set(symbols)
        if not allowed:
            raise ValueError("--elements shares no element with the chemical_system condition")
    plan.allowed = allowed_species(tuple(sorted(allowed))) if allowed else None
    space_group = plan.targets.get("space_group")
    if space_group is not None and plan.num_atoms is None:
        spec = by_name["space_group"]
        if spec.sample_num_atoms(space_group, 1) is not None:  # D.5.1: sizes of that group

            def counts(size: int, generator: torch.Generator) -> torch.Tensor:
                return spec.sample_num_atoms(space_group, size, generator)

            plan.atom_counts = counts
    return plan


def _symbols(system: frozenset) -> list[str]:
    from pymatgen.core.periodic_table import Element

    return sorted(Element.from_Z(int(z)).symbol for z in system)
