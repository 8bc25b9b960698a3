"""Property labels from files, and targets from text: the user-facing side of fine-tuning and
guided sampling (uses pymatgen for element symbols; the torch-only core is
:mod:`model.properties`).

Label files:

* a data build's ``properties.csv.gz`` (``crystalforge data labels``): ``id`` and one column per
  property, with ``properties.json`` beside it giving each one's kind, unit, level of theory and
  source;
* a custom CSV: ``id`` and one value column (named after the property, or ``value``), its kind
  given by the user (``scalar`` or ``categorical``).

Cell values: a number (scalar), a dash-joined element list such as ``Co-Li-O`` (chemical
system), a space-group number, any text (categorical); an empty cell is unlabelled.

Targets (``--condition NAME=...``): ``2.5`` (exact), ``2.5..3.5`` (range), ``>=300``, ``<=0.05``
(inequalities; ``>`` and ``<`` read the same), ``Li-Co-O`` or ``Li,Co,O`` (chemical system),
``225`` or ``Fm-3m`` (space group), a category name.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from model.data import CrystalTensors
from model.finetune import PropertyLabels, scalar_statistics
from model.properties import Interval, PropertyKind, PropertySpec, Target

#: Kinds a user may give a custom property (the others are built in).
CUSTOM_KINDS = (PropertyKind.scalar, PropertyKind.categorical)


class LabelError(ValueError):
    """A label file or target that cannot be used; the message names the file or property."""


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (``.csv`` or ``.csv.gz``); comment lines start with ``#``."""
    if not path.is_file():
        raise LabelError(f"no such label file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as handle:
            text = "".join(line for line in handle if not line.startswith("#"))
    except (OSError, UnicodeDecodeError) as error:
        raise LabelError(f"{path} is not a readable CSV: {error}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if "id" not in header:
        raise LabelError(f"{path} needs an 'id' column (it has: {', '.join(header) or 'none'})")
    return header, list(reader)


def build_metadata(build_dir: Path) -> dict[str, dict]:
    """``properties.json`` of a data build (empty when absent)."""
    path = build_dir / "properties.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("properties", {}))
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise LabelError(f"{path} is not a valid properties file: {error}") from None


def parse_cell(kind: PropertyKind, text: str, where: str) -> float | frozenset | int | str | None:
    """One label from a CSV cell; empty = unlabelled."""
    text = text.strip()
    if not text:
        return None
    if kind == PropertyKind.scalar:
        try:
            value = float(text)
        except ValueError:
            raise LabelError(f"{where}: {text!r} is not a number") from None
        return value if math.isfinite(value) else None
    if kind == PropertyKind.chemical_system:
        return parse_elements(text, where)
    if kind == PropertyKind.space_group:
        return parse_space_group(text, where)
    return text


def parse_elements(text: str, where: str) -> frozenset:
    """``Li-Co-O`` / ``Li,Co,O`` → frozenset of atomic numbers."""
    from pymatgen.core.periodic_table import Element

    symbols = [s.strip() for s in text.replace(",", "-").split("-") if s.strip()]
    if not symbols:
        raise LabelError(f"{where}: no elements in {text!r}")
    numbers = []
    for symbol in symbols:
        if not Element.is_valid_symbol(symbol):
            raise LabelError(f"{where}: {symbol!r} is not an element symbol")
        numbers.append(Element(symbol).Z)
    return frozenset(numbers)


def parse_space_group(text: str, where: str) -> int:
    """``225`` or a Hermann-Mauguin symbol such as ``Fm-3m`` → 1..230."""
    text = text.strip()
    if text.isdigit():
        number = int(text)
    else:
        from pymatgen.symmetry.groups import SpaceGroup

        try:
            number = SpaceGroup(text).int_number
        except ValueError:
            raise LabelError(f"{where}: {text!r} is not a space group") from None
    if not 1 <= number <= 230:
        raise LabelError(f"{where}: space group {number} is not in 1-230")
    return number


def parse_target(spec: PropertySpec, text: str) -> Target:
    """A ``--condition`` value for ``spec`` (module docstring); errors name the property."""
    where = f"--condition {spec.name}"
    text = text.strip()
    if spec.kind == PropertyKind.scalar:
        return spec.check(_parse_interval(text, where))
    if spec.kind == PropertyKind.chemical_system:
        return spec.check(parse_elements(text, where))
    if spec.kind == PropertyKind.space_group:
        return spec.check(parse_space_group(text, where))
    try:
        return spec.check(text)
    except ValueError as error:
        raise LabelError(f"--condition {error}") from None


def _parse_interval(text: str, where: str) -> Interval:
    def number(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            raise LabelError(f"{where}: {part.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise LabelError(f"{where}: {part.strip()!r} is not a finite number")
        return value

    for prefix, lower in ((">=", True), ("<=", False), (">", True), ("<", False)):
        if text.startswith(prefix):
            value = number(text[len(prefix) :])
            return Interval(value, None) if lower else Interval(None, value)
    if ".." in text:
        low, high = text.split("..", 1)
        low_value, high_value = number(low), number(high)
        if low_value > high_value:
            raise LabelError(f"{where}: empty range {text} (the lower end comes first)")
        return Interval(low_value, high_value)
    return Interval.exact(number(text))


def split_condition(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` or ``NAME>=VALUE`` / ``NAME<=VALUE`` → (name, value text)."""
    for operator in (">=", "<=", "=", ">", "<"):
        if operator in text:
            name, value = text.split(operator, 1)
            name = name.strip()
            if not name or not value.strip():
                break
            return name, value if operator == "=" else operator + value
    raise LabelError(
        f"--condition {text!r}: expected NAME=VALUE, NAME=LOW..HIGH, NAME>=VALUE or NAME<=VALUE"
    )


def load_labels(
    data: CrystalTensors,
    names: Sequence[str],
    *,
    build_dir: Path | None = None,
    labels_file: Path | None = None,
    kind: PropertyKind | None = None,
) -> list[PropertyLabels]:
    """The labels of ``names`` for every crystal of ``data`` (in its order), with specs.

    ``labels_file`` (a custom CSV) supplies a single property of the given ``kind``; otherwise
    the columns come from ``build_dir/properties.csv.gz`` and its ``properties.json``.
    """
    if labels_file is not None:
        if len(names) != 1:
            raise LabelError("--labels holds one property: give exactly one --property")
        if kind is None:
            raise LabelError("--labels needs --kind scalar or --kind categorical")
        header, rows = read_table(labels_file)
        name = names[0]
        column = name if name in header else ("value" if "value" in header else None)
        if column is None:
            raise LabelError(f"{labels_file} has no column {name!r} or 'value' beside 'id'")
        metadata = {name: {"kind": str(kind), "source": str(labels_file)}}
        return [_labels_for(data, name, rows, column, metadata[name], str(labels_file))]
    if build_dir is None:
        raise LabelError("no labels: give the data build folder or --labels FILE.csv")
    table = build_dir / "properties.csv.gz"
    if not table.is_file():
        raise LabelError(
            f"{build_dir} has no properties.csv.gz; run `crystalforge data labels {build_dir} "
            f"--property {','.join(names)}` first, or pass --labels FILE.csv"
        )
    header, rows = read_table(table)
    metadata = build_metadata(build_dir)
    result = []
    for name in names:
        if name not in header or name not in metadata:
            known = [h for h in header if h != "id"]
            raise LabelError(
                f"--property {name}: not labelled in {table} (it has: {', '.join(known) or 'none'})"
            )
        result.append(_labels_for(data, name, rows, name, metadata[name], str(table)))
    return result


def _labels_for(
    data: CrystalTensors,
    name: str,
    rows: list[dict[str, str]],
    column: str,
    metadata: dict,
    where: str,
) -> PropertyLabels:
    try:
        kind = PropertyKind(metadata.get("kind", "scalar"))
    except ValueError:
        raise LabelError(f"{where}: {name} has an unknown kind {metadata.get('kind')!r}") from None
    by_id = {}
    for number, row in enumerate(rows, start=2):
        by_id[row["id"]] = parse_cell(kind, row.get(column) or "", f"{where} line {number}")
    values = [by_id.get(crystal_id) for crystal_id in data.ids]
    labelled = [v for v in values if v is not None]
    if not labelled:
        raise LabelError(f"{where}: no crystal of the data set has a {name} label")
    spec = PropertySpec(
        name=name,
        kind=kind,
        unit=str(metadata.get("unit", "")),
        level_of_theory=str(metadata.get("level_of_theory", "")),
        source=str(metadata.get("source", where)),
        num_labels=len(labelled),
    )
    if kind == PropertyKind.scalar:
        stats = scalar_statistics(labelled)
        spec.mean, spec.std, spec.low, spec.high = (
            stats["mean"],
            stats["std"],
            stats["low"],
            stats["high"],
        )
    if kind == PropertyKind.categorical:
        spec.categories = sorted({str(v) for v in labelled})
    if kind in (PropertyKind.categorical, PropertyKind.space_group):
        spec.atom_counts = _atom_counts(data, values)
    return PropertyLabels(spec=spec, values=values)


def _atom_counts(data: CrystalTensors, values: Sequence) -> dict[str, list[int]]:
    """Atom-count histograms per label value (index = atoms per cell)."""
    counts: dict[str, Counter] = {}
    for value, n in zip(values, data.num_atoms.tolist(), strict=True):
        if value is not None:
            counts.setdefault(str(value), Counter())[n] += 1
    size = int(data.num_atoms.max()) + 1
    return {key: [counter.get(n, 0) for n in range(size)] for key, counter in counts.items()}
