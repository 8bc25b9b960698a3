"""Property conditions: what a fine-tuned model is conditioned on, and how a target is embedded
(paper B.1, B44, D.4-D.6). Imports torch only.

A property has a kind, and each kind its embedding ``g`` (the input of B44's adapters):

* ``scalar`` (energy above hull, band gap, bulk modulus, ...): a target is an interval
  ``[low, high]``: an exact value has ``low = high`` (the paper's case), an inequality leaves one
  end open (``None``). Each end is normalised by the labels' mean and standard deviation and
  encoded sinusoidally (Transformer-style, as the paper does for scalars), an open end as zeros
  and a flag: ``g = sin/cos(low) ⊕ sin/cos(high) ⊕ [low open, high open]``.
* ``chemical_system``: multi-hot over the elements Z = 1..100.
* ``space_group``: one-hot over the international numbers 1..230.
* ``categorical``: one-hot over the categories seen in the labels.

**Ranges (beyond the paper).** During fine-tuning a scalar label ``v`` is shown either exactly or
widened to an interval that contains it (:func:`widen`): a width ``w`` drawn independently of
``v``, then ``low = v - U w`` with ``U ~ Uniform(0, 1)``; a one-sided interval draws
``low = v - U R`` (or ``high = v + U R``) with ``R`` the labels' whole span. For a given interval
the chance of being drawn is then the same for every ``v`` inside it, so the model learns
``p(M | v ∈ [low, high])``: the data restricted to the range, not a blur around its middle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

NUM_ELEMENTS = 100  # Z = 1..100, the species the model places
NUM_SPACE_GROUPS = 230
SCALAR_FREQUENCIES = 16  # sin and cos of each: 32 features per interval end
#: Angular frequencies of the scalar encoding, in units of the labels' standard deviation:
#: from a quarter of a std resolved over the whole label range to 1/64 of a std.
_FREQUENCIES = torch.exp(torch.linspace(math.log(0.25), math.log(64.0), SCALAR_FREQUENCIES))


class PropertyKind(StrEnum):
    scalar = "scalar"
    categorical = "categorical"
    chemical_system = "chemical_system"
    space_group = "space_group"


@dataclass(frozen=True)
class Interval:
    """A scalar target ``[low, high]`` in the property's unit; ``None`` = open end."""

    low: float | None
    high: float | None

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError("an interval needs at least one end")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"empty interval: {self.low} > {self.high}")

    @classmethod
    def exact(cls, value: float) -> Interval:
        return cls(float(value), float(value))

    def contains(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


#: A target of any kind: an Interval (scalar), a set of atomic numbers (chemical system), a
#: space-group number, or a category name.
Target = Interval | frozenset | int | str


@dataclass
class PropertySpec:
    """One property a model is conditioned on, with everything needed to embed a target.

    ``mean``/``std``/``low``/``high`` describe a scalar's labels (normalisation and span);
    ``categories`` a categorical property's values; ``atom_counts`` maps a category (or space
    group, as a string) to its crystals' atom-count histogram (index = atoms per cell), so
    sampling can draw cell sizes that the target allows (D.5.1).
    """

    name: str
    kind: PropertyKind
    unit: str = ""
    level_of_theory: str = ""
    source: str = ""
    mean: float = 0.0
    std: float = 1.0
    low: float = 0.0
    high: float = 0.0
    categories: list[str] = field(default_factory=list)
    atom_counts: dict[str, list[int]] = field(default_factory=dict)
    num_labels: int = 0

    @property
    def dim(self) -> int:
        """Length of this property's embedding ``g``."""
        if self.kind == PropertyKind.scalar:
            return 4 * SCALAR_FREQUENCIES + 2
        if self.kind == PropertyKind.chemical_system:
            return NUM_ELEMENTS
        if self.kind == PropertyKind.space_group:
            return NUM_SPACE_GROUPS
        return len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "unit": self.unit,
            "level_of_theory": self.level_of_theory,
            "source": self.source,
            "mean": self.mean,
            "std": self.std,
            "low": self.low,
            "high": self.high,
            "categories": list(self.categories),
            "atom_counts": {k: list(v) for k, v in self.atom_counts.items()},
            "num_labels": self.num_labels,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PropertySpec:
        values = dict(raw)
        values["kind"] = PropertyKind(values["kind"])
        return cls(**values)

    def check(self, target: Target) -> Target:
        """``target`` if it suits this property, else a ValueError naming the property."""
        kind = self.kind
        if kind == PropertyKind.scalar and not isinstance(target, Interval):
            raise ValueError(f"{self.name}: expected a number or a range, got {target!r}")
        if kind == PropertyKind.chemical_system:
            if not isinstance(target, frozenset) or not target:
                raise ValueError(f"{self.name}: expected a set of elements, got {target!r}")
            bad = [z for z in target if not 1 <= int(z) <= NUM_ELEMENTS]
            if bad:
                raise ValueError(f"{self.name}: atomic numbers outside 1-{NUM_ELEMENTS}: {bad}")
        if kind == PropertyKind.space_group and not (
            isinstance(target, int) and 1 <= target <= NUM_SPACE_GROUPS
        ):
            raise ValueError(f"{self.name}: expected a space-group number 1-230, got {target!r}")
        if kind == PropertyKind.categorical and target not in self.categories:
            raise ValueError(
                f"{self.name}: unknown category {target!r}; this model knows "
                + ", ".join(self.categories)
            )
        return target

    def embed(self, targets: Sequence[Target | None]) -> Tensor:
        """``[len(targets), dim]`` embeddings; a ``None`` target gives zeros (it is masked)."""
        out = torch.zeros(len(targets), self.dim)
        for row, target in enumerate(targets):
            if target is None:
                continue
            self.check(target)
            if self.kind == PropertyKind.scalar:
                out[row] = self._embed_interval(target)
            elif self.kind == PropertyKind.chemical_system:
                out[row, [int(z) - 1 for z in target]] = 1.0
            elif self.kind == PropertyKind.space_group:
                out[row, int(target) - 1] = 1.0
            else:
                out[row, self.categories.index(target)] = 1.0
        return out

    def _embed_interval(self, interval: Interval) -> Tensor:
        half = 2 * SCALAR_FREQUENCIES
        parts = []
        for end in (interval.low, interval.high):
            if end is None:
                parts.append(torch.zeros(half))
            else:
                angles = _FREQUENCIES * ((end - self.mean) / self.std)
                parts.append(torch.cat([torch.sin(angles), torch.cos(angles)]))
        flags = torch.tensor([float(interval.low is None), float(interval.high is None)])
        return torch.cat([*parts, flags])

    def sample_num_atoms(
        self, target: Target, count: int, generator: torch.Generator | None = None
    ) -> Tensor | None:
        """Atom counts for ``count`` samples of crystals with this target (D.5.1), or None
        when the labels hold no histogram for it."""
        histogram = self.atom_counts.get(str(target))
        if not histogram or sum(histogram) == 0:
            return None
        weights = torch.tensor(histogram, dtype=torch.float64)
        return torch.multinomial(weights, count, replacement=True, generator=generator)


@dataclass
class ConditionBatch:
    """Embedded conditions of a batch: ``values [B, Σ dim]`` (properties in order) and
    ``present bool [B, P]`` (False = null condition for that property, B44's indicator)."""

    values: Tensor
    present: Tensor

    def select(self, keep: Tensor) -> ConditionBatch:
        return ConditionBatch(self.values[keep], self.present[keep])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ConditionBatch:
        return ConditionBatch(self.values.to(device=device, dtype=dtype), self.present.to(device))


def embed_conditions(
    specs: Sequence[PropertySpec], targets: dict[str, Sequence[Target | None]], size: int
) -> ConditionBatch:
    """The :class:`ConditionBatch` of ``size`` crystals; ``targets`` maps a property name to one
    target per crystal (``None`` = unconditioned); properties not in ``targets`` are null."""
    unknown = set(targets) - {spec.name for spec in specs}
    if unknown:
        raise ValueError(
            f"not a property of this model: {', '.join(sorted(unknown))} "
            f"(it knows {', '.join(spec.name for spec in specs) or 'none'})"
        )
    columns, present = [], torch.zeros(size, len(specs), dtype=torch.bool)
    for index, spec in enumerate(specs):
        per_crystal = list(targets.get(spec.name, [None] * size))
        if len(per_crystal) != size:
            raise ValueError(f"{spec.name}: {len(per_crystal)} targets for {size} crystals")
        columns.append(spec.embed(per_crystal))
        present[:, index] = torch.tensor([target is not None for target in per_crystal])
    return ConditionBatch(torch.cat(columns, dim=-1), present)


def widen(
    value: float,
    spec: PropertySpec,
    generator: torch.Generator,
    exact_probability: float = 0.5,
    one_sided_probability: float = 0.25,
) -> Interval:
    """A training interval around the label ``value`` (module docstring, "Ranges").

    With probability ``exact_probability`` the label itself; otherwise a two-sided interval of
    width ``w ~ Uniform(0, span/2)``, or with ``one_sided_probability`` (of the widened cases)
    each, an open-ended one, ``value`` placed uniformly inside.
    """
    span = max(spec.high - spec.low, 1e-6)
    draws = torch.rand(3, generator=generator).tolist()
    if draws[0] < exact_probability:
        return Interval.exact(value)
    position = draws[2]
    if draws[1] < one_sided_probability:
        return Interval(value - position * span, None)
    if draws[1] < 2 * one_sided_probability:
        return Interval(None, value + position * span)
    width = 0.5 * span * torch.rand(1, generator=generator).item()
    low = value - position * width
    return Interval(low, low + width)
