"""Sampling crystals from a trained checkpoint: the one place the CLI (``crystalforge
generate``) and the campaign's generator (:class:`flows.generate.MatterGenGeneratorMaker`) share.

Reproducibility: atom counts are drawn once, up front, from the training distribution with a
generator seeded by ``seed``; batch ``b`` is sampled with its own generator seeded from
``(seed, b)``. The same checkpoint, seed, batch size, step count and device therefore give the
same crystals, whichever batches run before it.

Steering (:func:`generate_structures`): property conditions with classifier-free guidance for a
fine-tuned checkpoint (found by :func:`checkpoint_for` when none is named), an exact composition
(types held fixed, coordinates and lattice generated), and an element mask that keeps a
chemical-system condition from placing any other element.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.records import CrystalRecord

if TYPE_CHECKING:
    import torch

    from model.checkpoint import LoadedCheckpoint

__all__ = [
    "GENERATOR_NAME",
    "GenerationResult",
    "allowed_species",
    "batch_seed",
    "check_checkpoint",
    "checkpoint_for",
    "checkpoint_path",
    "generate_structures",
    "parse_composition",
    "parse_elements",
    "resolve_device",
]

GENERATOR_NAME = "mattergen"


@dataclass
class GenerationResult:
    """What :func:`generate_structures` made.

    Attributes
    ----------
    records
        One :class:`CrystalRecord` per kept sample, id ``mattergen-<seed>-<index>`` where
        ``index`` is the sample's position in the request (dropped indices are skipped).
    dropped
        Samples the sampler dropped, by reason (``non-finite``, ``collapsed lattice``, ...).
    num_requested, num_steps, wall_seconds, device
        The request size, the predictor steps actually used, the time spent sampling and
        converting (checkpoint loading excluded), and where it ran.
    """

    records: list[CrystalRecord]
    dropped: dict[str, int] = field(default_factory=dict)
    num_requested: int = 0
    num_steps: int = 0
    wall_seconds: float = 0.0
    device: str = "cpu"

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def samples_per_second(self) -> float:
        return len(self.records) / self.wall_seconds if self.wall_seconds > 0 else float("nan")


def resolve_device(requested: str | None) -> torch.device:
    """``requested`` (``cpu``, ``cuda``, ``cuda:1``) or the best available device.

    Raises
    ------
    ValueError
        An unknown device name, or CUDA asked for on a machine without it.
    """
    import torch

    from model.train import pick_device

    try:
        device = pick_device(requested)
    except RuntimeError as error:
        raise ValueError(f"unknown device {requested!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {requested!r}")
    return device


def parse_elements(text: str) -> tuple[str, ...]:
    """Element symbols from ``"Li,Co,O"`` (or ``"Li-Co-O"``), sorted and unique.

    Raises
    ------
    ValueError
        An empty list or entry, an unknown symbol, or an element the model cannot place
        (Z > 100); the message names the token and the whole input.
    """
    from pymatgen.core.periodic_table import Element

    from flows.generators.chemsys import check_element_symbol
    from model.crystal import MAX_ATOMIC_NUMBER

    tokens = [token.strip() for token in re.split(r"[,-]", text)]
    if not any(tokens):
        raise ValueError(f"no elements in {text!r}; expected symbols such as 'Li,Co,O'")
    for position, token in enumerate(tokens, start=1):
        check_element_symbol(token, position, repr(text))
        if Element(token).Z > MAX_ATOMIC_NUMBER:
            raise ValueError(
                f"the model places elements up to Z = {MAX_ATOMIC_NUMBER}; cannot use {token}"
            )
    return tuple(sorted(set(tokens)))


def allowed_species(elements: tuple[str, ...] | list[str]) -> torch.Tensor:
    """``bool [NUM_CLASSES]`` with the diffusion classes (``Z - 1``) of ``elements`` set."""
    import torch
    from pymatgen.core.periodic_table import Element

    from model.crystal import NUM_CLASSES

    allowed = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    for symbol in elements:
        allowed[Element(symbol).Z - 1] = True
    return allowed


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for batch ``batch_index`` of a run seeded with ``seed`` (any integers)."""
    digest = hashlib.sha256(f"crystalforge-mattergen:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def checkpoint_path(path: str | Path | None) -> Path:
    """``path``, or the shipped default checkpoint when ``path`` is ``None`` or empty."""
    from evaluation.paths import default_checkpoint

    return Path(path) if path else default_checkpoint()


def shipped_checkpoints() -> list[tuple[Path, tuple[str, ...]]]:
    """Every checkpoint shipped in ``data/checkpoints`` with the properties it was tuned on."""
    from evaluation.paths import data_dir
    from model.checkpoint import CheckpointError, read_payload

    found = []
    for path in sorted((data_dir() / "checkpoints").glob("*.pt")):
        try:
            payload = read_payload(path)
        except CheckpointError:
            continue
        names = tuple(raw["name"] for raw in payload.get("properties", []))
        found.append((path, names))
    return found


def checkpoint_for(properties: set[str] | frozenset[str]) -> Path:
    """The shipped checkpoint fine-tuned on ``properties`` (the one with the fewest others);
    the default checkpoint when none is asked for.

    Raises
    ------
    ValueError
        No shipped checkpoint knows all of ``properties``; names what ships.
    """
    if not properties:
        return checkpoint_path(None)
    shipped = shipped_checkpoints()  # reads every shipped payload: once
    fitting = [(len(names), path) for path, names in shipped if properties <= set(names)]
    if fitting:
        return min(fitting)[1]
    offered = sorted({name for _, names in shipped for name in names})
    raise ValueError(
        f"no shipped checkpoint is fine-tuned on {', '.join(sorted(properties))} (shipped: "
        f"{', '.join(offered) or 'none'}); fine-tune one with `crystalforge finetune` and pass "
        "--checkpoint"
    )


def parse_composition(text: str, max_atoms: int) -> tuple[str, ...]:
    """The species of one cell of ``text`` (``Li2CoO4`` → 7 symbols), for composition-fixed
    sampling; the formula is the cell as written (``Li4Co2O8`` for two formula units).

    Raises
    ------
    ValueError
        An unreadable formula, fractional amounts, an element beyond Z = 100, or more atoms
        than the model's cells hold.
    """
    from pymatgen.core import Composition, Element

    from model.crystal import MAX_ATOMIC_NUMBER

    try:
        composition = Composition(text)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{text!r} is not a chemical formula ({error})") from None
    if not len(composition):
        raise ValueError(f"{text!r} is not a chemical formula")
    for element in composition:  # pymatgen reads unknown symbols as dummy species
        if not isinstance(element, Element):
            raise ValueError(f"{text!r}: {element.symbol!r} is not an element symbol")
    species: list[str] = []
    for element, amount in sorted(composition.items(), key=lambda item: item[0].Z):
        if abs(amount - round(amount)) > 1e-6 or round(amount) < 1:
            raise ValueError(f"{text!r}: {element} has a non-integer amount {amount:g}")
        if element.Z > MAX_ATOMIC_NUMBER:
            raise ValueError(f"{text!r}: the model places elements up to Z = {MAX_ATOMIC_NUMBER}")
        species += [element.symbol] * int(round(amount))
    if len(species) > max_atoms:
        raise ValueError(
            f"{text!r} has {len(species)} atoms; this model's cells hold at most {max_atoms}"
        )
    return tuple(species)


def check_checkpoint(path: str | Path | None) -> None:
    """Raise a one-line ``ValueError`` unless ``path`` (default: the shipped checkpoint) is a
    readable CrystalForge checkpoint."""
    from model.checkpoint import CheckpointError, read_payload

    try:
        read_payload(checkpoint_path(path))
    except CheckpointError as error:
        raise ValueError(str(error)) from None


def generate_structures(
    checkpoint: str | Path | LoadedCheckpoint | None,
    num_samples: int,
    *,
    batch_size: int = 64,
    num_atoms: int | None = None,
    seed: int = 0,
    num_steps: int | None = None,
    elements: tuple[str, ...] | list[str] | None = None,
    device: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    conditions: Mapping[str, str] | None = None,
    guidance: float = 2.0,
    composition: str | None = None,
    element_mask: bool = True,
    type_temperature: float | None = None,
) -> GenerationResult:
    """Sample ``num_samples`` crystals from ``checkpoint`` in batches of ``batch_size``.

    Parameters
    ----------
    checkpoint
        A checkpoint file, or one already loaded on ``device`` (it is not read again).
    num_atoms
        Atoms per crystal for every sample; default: drawn from the training distribution.
    num_steps
        Predictor steps ``T``; default: the model's (1000 for the paper's configs).
    elements
        Restrict the species to these symbols; default: every species seen in training.
    device
        ``cpu`` or ``cuda``; default: the GPU when there is one.
    progress
        Called as ``progress(done, num_samples)`` after each batch.
    conditions
        Property targets as text, ``{"band_gap": "2.5..3.5", "chemical_system": "Li-Co-O"}``
        (:func:`model.property_data.parse_target`); the checkpoint must be fine-tuned on each.
    guidance
        Classifier-free guidance scale ``γ`` (B45; the paper uses 2; 0 = unconditional).
    composition
        Keep the atom types of every sample fixed at this formula (one cell as written).
    element_mask
        With a ``chemical_system`` condition, forbid every other element in the type
        posterior (no leakage); ``False`` leaves the condition to guidance alone.
    type_temperature
        Temperature of the type posterior; default: the checkpoint's
        (``diffusion.type_temperature``).

    Raises
    ------
    model.checkpoint.CheckpointError
        The checkpoint is missing, corrupt or not a CrystalForge checkpoint.
    ValueError
        A bad count, element or device, or atom counts asked of a model that has none.
    """
    import torch

    from flows.generators.steering import steering_plan
    from model.checkpoint import LoadedCheckpoint, load_checkpoint
    from model.sampler import SamplerSettings, sample
    from model.structures import batch_to_structures

    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_atoms is not None and num_atoms < 1:
        raise ValueError(f"num_atoms must be at least 1, got {num_atoms}")
    if num_steps is not None and num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if guidance < 0:
        raise ValueError(f"guidance must be at least 0, got {guidance}")
    target = resolve_device(device)
    conditions = dict(conditions or {})

    if isinstance(checkpoint, LoadedCheckpoint):
        loaded = checkpoint
    else:
        path = checkpoint if checkpoint else checkpoint_for(frozenset(conditions))
        loaded = load_checkpoint(checkpoint_path(path), device=target)
    network = loaded.network
    plan = steering_plan(loaded, conditions, composition, num_atoms, elements, element_mask)
    steps = num_steps or loaded.config.diffusion.sampling_steps or loaded.config.diffusion.num_steps
    started = time.perf_counter()
    count_generator = torch.Generator().manual_seed(seed % 2**63)
    if plan.num_atoms is not None:
        counts = torch.full((num_samples,), plan.num_atoms, dtype=torch.long)
    elif plan.atom_counts is not None:
        counts = plan.atom_counts(num_samples, count_generator)
    else:
        counts = network.statistics.sample_num_atoms(num_samples, count_generator).cpu()

    temperature = type_temperature or loaded.config.diffusion.type_temperature
    if temperature <= 0:
        raise ValueError(f"type_temperature must be positive, got {temperature}")
    settings = SamplerSettings(
        num_steps=steps, guidance_scale=guidance, type_temperature=temperature
    )
    records: list[CrystalRecord] = []
    dropped: Counter[str] = Counter()
    for batch_index, start in enumerate(range(0, num_samples, batch_size)):
        generator = torch.Generator(device=target).manual_seed(batch_seed(seed, batch_index))
        batch_counts = counts[start : start + batch_size]
        result = sample(
            network,
            batch_counts.to(target),
            settings,
            generator=generator,
            condition=plan.condition(len(batch_counts)),
            allowed_classes=plan.allowed,
            fixed_types=plan.fixed_types(len(batch_counts)),
        )
        dropped.update(result.dropped)
        structures = batch_to_structures(result.crystals) if result.crystals.num_crystals else []
        for structure, position in zip(structures, result.sample_index.tolist(), strict=True):
            index = start + int(position)
            records.append(
                CrystalRecord(
                    structure=structure,
                    id=f"{GENERATOR_NAME}-{seed}-{index}",
                    source=GENERATOR_NAME,
                    properties={
                        "generator": GENERATOR_NAME,
                        "checkpoint": str(loaded.path),
                        "seed": seed,
                        "steps": steps,
                        "type_temperature": temperature,
                        "index": index,
                        **plan.provenance(guidance),
                    },
                )
            )
        if progress is not None:
            progress(min(start + batch_size, num_samples), num_samples)
    return GenerationResult(
        records=records,
        dropped=dict(dropped),
        num_requested=num_samples,
        num_steps=steps,
        wall_seconds=time.perf_counter() - started,
        device=str(target),
    )
