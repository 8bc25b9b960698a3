"""What is in a crystal data set: the numbers behind ``crystalforge data info PATH``."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from evaluation.records import ReadProblem, ReadResult

#: Upper bounds (inclusive) of the atoms-per-cell bins; MatterGen trains on cells of <= 20 atoms.
_SITE_BIN_EDGES = (1, 2, 4, 8, 12, 16, 20, 30, 40, 60, 100)
#: How many elements, properties and problems the text report lists before "... and N more".
_TEXT_ELEMENTS = 30
_TEXT_PROBLEMS = 20


@dataclass
class PropertyStats:
    """How often a property is present, and its range when it is numeric."""

    count: int
    numeric: bool = False
    min: float | None = None
    max: float | None = None
    mean: float | None = None


@dataclass
class DataSummary:
    """Summary of a read: counts, provenance, chemistry, cell sizes, properties, problems.

    Attributes
    ----------
    n_structures, n_skipped
        Crystals read, and rows/frames/files skipped.
    sources
        Number of crystals per ``source``.
    element_counts
        For each element, the number of crystals containing it (most common first).
    atoms_per_cell
        Histogram of sites per cell: bin label (``"9-12"``) to count, in bin order.
    properties
        Per property name, how many crystals have it and min/max/mean when numeric.
    n_disordered, n_with_energy
        Crystals with partially occupied sites; crystals carrying a total energy.
    problems
        Every skipped row/frame/file and why.
    """

    n_structures: int
    n_skipped: int
    sources: dict[str, int]
    element_counts: dict[str, int]
    atoms_per_cell: dict[str, int]
    properties: dict[str, PropertyStats]
    n_disordered: int
    n_with_energy: int
    problems: list[ReadProblem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (problems as ``{"location", "reason"}``)."""
        return {
            "n_structures": self.n_structures,
            "n_skipped": self.n_skipped,
            "sources": self.sources,
            "element_counts": self.element_counts,
            "atoms_per_cell": self.atoms_per_cell,
            "properties": {name: asdict(stats) for name, stats in self.properties.items()},
            "n_disordered": self.n_disordered,
            "n_with_energy": self.n_with_energy,
            "problems": [asdict(problem) for problem in self.problems],
        }

    def to_text(self) -> str:
        """A readable multi-line report."""
        lines = [
            f"crystals: {self.n_structures}   skipped: {self.n_skipped}   "
            f"disordered: {self.n_disordered}   with energy: {self.n_with_energy}",
            "",
            "sources:",
        ]
        lines += [f"  {source:<28}{count:>8}" for source, count in self.sources.items()]
        lines += ["", f"atoms per cell ({self.n_structures} crystals):"]
        largest = max(self.atoms_per_cell.values(), default=0) or 1
        bins = list(self.atoms_per_cell.items())
        filled = [i for i, (_, count) in enumerate(bins) if count]
        # Empty bins below the smallest and above the largest cell say nothing.
        shown_bins = bins[filled[0] : filled[-1] + 1] if filled else []
        for label, count in shown_bins:
            bar = "#" * round(40 * count / largest)
            lines.append(f"  {label:>8}  {count:>8}  {bar}")
        lines += ["", f"elements ({len(self.element_counts)}; crystals containing each):"]
        shown = list(self.element_counts.items())[:_TEXT_ELEMENTS]
        for start in range(0, len(shown), 6):
            lines.append("  " + "  ".join(f"{el:<3}{n:>6}" for el, n in shown[start : start + 6]))
        if len(self.element_counts) > _TEXT_ELEMENTS:
            lines.append(f"  ... and {len(self.element_counts) - _TEXT_ELEMENTS} more")
        lines += ["", "properties:" if self.properties else "properties: none"]
        for name, stats in self.properties.items():
            text = f"  {name:<28}{stats.count:>8} present"
            if stats.numeric:
                text += f"   min {stats.min:.4g}   max {stats.max:.4g}   mean {stats.mean:.4g}"
            lines.append(text)
        if self.problems:
            lines += ["", f"skipped ({len(self.problems)}):"]
            lines += [f"  {problem}" for problem in self.problems[:_TEXT_PROBLEMS]]
            if len(self.problems) > _TEXT_PROBLEMS:
                lines.append(f"  ... and {len(self.problems) - _TEXT_PROBLEMS} more")
        return "\n".join(lines)


def _site_bin_labels() -> list[tuple[int, str]]:
    labels, lower = [], 1
    for upper in _SITE_BIN_EDGES:
        labels.append((upper, str(upper) if upper == lower else f"{lower}-{upper}"))
        lower = upper + 1
    return labels


def _site_bin(n_sites: int, bins: list[tuple[int, str]]) -> str:
    for upper, label in bins:
        if n_sites <= upper:
            return label
    return f">{_SITE_BIN_EDGES[-1]}"


def summarize(result: ReadResult) -> DataSummary:
    """Summarise the crystals of a read.

    Parameters
    ----------
    result
        What :func:`evaluation.io.crystals.read_crystals` returned.

    Returns
    -------
    DataSummary
        Counts per source and element, atoms-per-cell histogram, property statistics,
        disorder and the problems of the read.
    """
    sources: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    bins = _site_bin_labels()
    atoms_per_cell = {label: 0 for _, label in bins} | {f">{_SITE_BIN_EDGES[-1]}": 0}
    present: Counter[str] = Counter()
    numeric_values: dict[str, list[float]] = {}
    non_numeric: set[str] = set()
    n_disordered = n_with_energy = 0

    for record in result.records:
        structure = record.structure
        sources[record.source or "(none)"] += 1
        elements.update({element.symbol for element in structure.composition.elements})
        atoms_per_cell[_site_bin(len(structure), bins)] += 1
        n_disordered += not structure.is_ordered
        n_with_energy += record.energy is not None
        for name, value in record.properties.items():
            present[name] += 1
            if isinstance(value, int | float) and not isinstance(value, bool):
                numeric_values.setdefault(name, []).append(float(value))
            else:
                non_numeric.add(name)

    properties = {}
    for name in sorted(present):
        values = numeric_values.get(name, [])
        if values and name not in non_numeric:
            properties[name] = PropertyStats(
                present[name], True, min(values), max(values), sum(values) / len(values)
            )
        else:
            properties[name] = PropertyStats(present[name])

    return DataSummary(
        n_structures=len(result.records),
        n_skipped=result.n_skipped,
        sources=dict(sorted(sources.items(), key=lambda item: (-item[1], item[0]))),
        element_counts=dict(sorted(elements.items(), key=lambda item: (-item[1], item[0]))),
        atoms_per_cell=atoms_per_cell,
        properties=properties,
        n_disordered=n_disordered,
        n_with_energy=n_with_energy,
        problems=list(result.problems),
    )
