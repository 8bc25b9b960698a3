"""What an evaluation produces: one row per structure, a summary, and the files a person opens.

``summary.json`` holds the fractions MatterGen reports (validity, uniqueness, novelty,
stability, S.U.N.) with the settings and the reference that produced them;
``structures.csv`` holds one row per input structure; two PNG plots show the E_hull
distribution and how uniqueness falls as more samples are drawn.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, fields
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.io.crystals import atomic_output


@dataclass
class StructureEvaluation:
    """The verdicts for one structure (a row of ``structures.csv``).

    The verdicts are :mod:`evaluation.metrics.sun`'s (defined there): uniqueness, novelty and
    stability are judged on the relaxed structure when a relaxation ran (a failed relaxation leaves
    the structure neither unique nor stable), else on the input. ``duplicate_of`` is the index of
    the earlier structure this one matches. ``novelty`` is ``novel``, ``known`` or
    ``unverified``; ``novel`` says whether it counts as novel for S.U.N. ``hull_label`` says
    what the E_hull compares (``mlff:chgnet-0.3.0 vs dft:mp-gga-ggau (mp2020)``) and
    ``hull_coverage`` how many of the system's known hull phases that hull holds.
    """

    index: int
    id: str
    source: str
    formula: str
    chemsys: str
    n_atoms: int
    valid: bool
    valid_structure: bool
    valid_composition: bool
    unique: bool
    duplicate_of: int | None
    novel: bool
    matched_reference: str | None
    novelty: str = "novel"
    known_composition: str | None = None
    e_above_hull: float | None = None
    formation_energy_per_atom: float | None = None
    energy_per_atom: float | None = None
    stable: bool = False
    on_hull: bool = False
    sun: bool = False
    sun_on_hull: bool = False
    rmsd: float | None = None
    relax_status: str = "not_relaxed"
    relax_message: str = ""
    level_of_theory: str | None = None
    hull_reference: str | None = None
    correction: str | None = None
    hull_label: str | None = None
    hull_coverage: str | None = None
    hull_complete: bool | None = None
    hull_message: str = ""
    flags: str = ""
    explanation: str = ""


#: The leading columns of ``structures.csv`` (the rest follow in field order).
LEADING_COLUMNS = ["index", "formula", "valid", "unique", "novel", "e_above_hull", "stable", "sun"]


def _fraction(count: int, total: int) -> float:
    return count / total if total else float("nan")


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


#: Counts also reported as fractions of all structures.
FRACTIONS = (
    "valid",
    "valid_structure",
    "valid_composition",
    "unique",
    "novel",
    "known",
    "unverified",
    "unique_novel",
    "stable",
    "on_hull",
    "sun",
    "sun_on_hull",
    "sun_complete_hull",
)


def summarize(rows: list[StructureEvaluation], counts: dict[str, int]) -> dict[str, Any]:
    """Counts (``evaluation.metrics.sun.summarize``), fractions over every input, and averages.

    ``avg_e_above_hull`` and ``avg_rmsd`` average over the structures that have the value.
    """
    total = len(rows)
    summary: dict[str, Any] = {"n_structures": total, **counts}
    summary["n_relax_failed"] = sum(
        r.relax_status not in ("ok", "not_converged", "not_relaxed") for r in rows
    )
    summary.update({f"frac_{name}": _fraction(counts[f"n_{name}"], total) for name in FRACTIONS})
    summary["avg_e_above_hull"] = _mean([r.e_above_hull for r in rows])
    summary["avg_rmsd"] = _mean([r.rmsd for r in rows])
    return summary


def _atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` only once it is fully written (see ``atomic_output``)."""
    with atomic_output(path) as stream:
        stream.write(text)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_summary(summary: dict[str, Any], path: Path) -> None:
    """``summary.json`` (NaN written as ``null``)."""
    _atomic_write_text(path, json.dumps(_json_safe(summary), indent=2, sort_keys=False) + "\n")


def write_structures_csv(rows: list[StructureEvaluation], path: Path) -> None:
    """``structures.csv``: one row per input structure, the paper's columns first."""
    names = [f.name for f in fields(StructureEvaluation)]
    columns = LEADING_COLUMNS + [n for n in names if n not in LEADING_COLUMNS]
    lines: list[list[Any]] = []
    for row in rows:
        record = asdict(row)
        lines.append(["" if record[c] is None else record[c] for c in columns])
    buffer = StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(lines)
    _atomic_write_text(path, buffer.getvalue())


def uniqueness_curve(rows: list[StructureEvaluation]) -> tuple[np.ndarray, np.ndarray]:
    """Fraction unique among the first n structures, for n = 1..N (the sampling order)."""
    unique_flags = np.array([r.duplicate_of is None for r in rows], dtype=float)
    n = np.arange(1, len(rows) + 1)
    return n, np.cumsum(unique_flags) / n


#: Below this many samples a duplicate-free set gives a flat line at 1: no plot.
MIN_SAMPLES_FOR_UNIQUENESS_PLOT = 100


def _uniqueness_is_informative(rows: list[StructureEvaluation]) -> bool:
    """The curve says something: it has a duplicate to show, or enough samples that its
    flatness is itself a finding."""
    return len(rows) >= MIN_SAMPLES_FOR_UNIQUENESS_PLOT or any(
        r.duplicate_of is not None for r in rows
    )


def write_plots(rows: list[StructureEvaluation], output_dir: Path, threshold: float) -> list[Path]:
    """E_hull histogram and, when it is informative, the uniqueness-vs-samples curve (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    written: list[Path] = []
    energies = [r.e_above_hull for r in rows if r.e_above_hull is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    if energies:
        upper = float(np.percentile(energies, 99)) if len(energies) > 10 else max(energies)
        bins = np.linspace(min(min(energies), 0.0), max(upper, threshold * 2, 0.05), 40)
        ax.hist(np.clip(energies, bins[0], bins[-1]), bins=bins, color="#3b7dd8")
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"stable < {threshold} eV/atom")
        ax.axvline(0.0, color="grey", ls=":", lw=1)
        level = next((r.level_of_theory for r in rows if r.level_of_theory), "")
        ax.set_title(f"Energy above hull ({level})", fontsize=9)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no energies: stability not evaluated", ha="center", va="center")
    ax.set_xlabel("E above hull (eV/atom)")
    ax.set_ylabel("structures")
    fig.tight_layout()
    path = output_dir / "e_above_hull_hist.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    if not _uniqueness_is_informative(rows):
        return written
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    if rows:
        n, frac = uniqueness_curve(rows)
        ax.plot(n, frac, color="#d8573b")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("number of samples")
    ax.set_ylabel("fraction unique")
    ax.set_title("Uniqueness vs number of samples", fontsize=9)
    fig.tight_layout()
    path = output_dir / "uniqueness_vs_samples.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
