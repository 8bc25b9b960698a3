"""Tables and figures of the chemical-system benchmark (Fig. 3a–e, ``chemsys.md``).

Inputs are :meth:`~evaluation.discovery.combined.SystemScore.to_dict` results, each with the
system's Table D3 grouping added (``exploration``, ``n_elements``). Group statistics are over
systems: the mean of the per-system values with a 95 % Student-t interval (the paper's bars show
means over the nine systems of a group, with their minimum and maximum, which are kept too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.discovery.combined import REFERENCE
from evaluation.discovery.systems import EXPLORATIONS

#: Method colours of every figure (the reference is grey, as Alex-MP-ICSD in Fig. 3).
COLOURS = {
    "mattergen": "#1f77b4",
    "rss": "#d62728",
    "substitution": "#2ca02c",
    REFERENCE: "#7f7f7f",
}
ARITIES = {3: "ternary", 4: "quaternary", 5: "quinary"}


def save_figure(fig: Any, path: Path, **options: Any) -> list[Path]:
    """``path`` plus ``.png`` and ``.svg`` (the figures a person opens, and the ones a paper
    takes); closes the figure."""
    import matplotlib.pyplot as plt

    written = []
    for suffix in (".png", ".svg"):
        out = path.parent / f"{path.name}{suffix}"  # appended: a stem may hold a dot (ge0.2)
        fig.savefig(out, dpi=110, **options)
        written.append(out)
    plt.close(fig)
    return written


def mean_interval(
    values: Sequence[float], bounds: tuple[float, float] = (0.0, math.inf)
) -> dict[str, float | int | None]:
    """Mean, 95 % Student-t interval (clipped to ``bounds``: shares and counts cannot be
    negative), minimum and maximum of ``values`` (``None`` where undefined: no value, or one
    value for the interval)."""
    from scipy.stats import t

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return {"n": 0, "mean": None, "low": None, "high": None, "min": None, "max": None}
    mean = float(data.mean())
    if data.size > 1:
        half = float(t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
        low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    else:
        low = high = None
    return {
        "n": int(data.size),
        "mean": mean,
        "low": low,
        "high": high,
        "min": float(data.min()),
        "max": float(data.max()),
    }


def _groups(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    by_exploration = {
        name: [r for r in results if r.get("exploration") == name] for name in EXPLORATIONS
    }
    by_arity = {label: [r for r in results if r["n_elements"] == n] for n, label in ARITIES.items()}
    return {
        "exploration": {k: v for k, v in by_exploration.items() if v},
        "n_elements": {k: v for k, v in by_arity.items() if v},
    }


def aggregate(results: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Fig. 3a–d's numbers: per grouping, group and method, the S.U.N. rate (%), the rate of
    S.U.N. structures also stable against the DFT hull of the known phases
    (``sun_known_hull_rate``: the combined hull holds only the reference compounds that have
    structures, so it is optimistic where their coverage is low), and the number of unique
    structures on the combined hull, over the group's systems."""
    out: dict[str, Any] = {}
    for grouping, groups in _groups(results).items():
        out[grouping] = {}
        for group, members in groups.items():
            row: dict[str, Any] = {"systems": [r["chemsys"] for r in members]}
            for method in methods:
                scores = [r["methods"].get(method) for r in members]
                rates = [100 * s["sun_rate"] for s in scores if s and s["sun_rate"] is not None]
                confirmed = [
                    100 * s["n_sun_known_hull"] / s["n_final"]
                    for s in scores
                    if s and s["n_final"] and s.get("n_sun_known_hull") is not None
                ]
                hull = [s["n_on_hull"] for s in scores if s]
                row[method] = {
                    "sun_rate": mean_interval(rates, bounds=(0.0, 100.0)),
                    "sun_known_hull_rate": mean_interval(confirmed, bounds=(0.0, 100.0)),
                    "on_hull": {**mean_interval(hull), "total": int(sum(hull))},
                }
            on_hull = [r["reference_on_hull"] for r in members]
            row[REFERENCE] = {"on_hull": {**mean_interval(on_hull), "total": int(sum(on_hull))}}
            out[grouping][group] = row
    return out


def _cell(score: dict[str, Any] | None) -> str:
    if not score or not score["n_final"]:
        return "–"
    confirmed, suspect = score.get("n_sun_known_hull"), score.get("n_far_below")
    return (
        f"{100 * score['sun_rate']:.0f} % ({score['n_sun']}/{score['n_final']}"
        + (f"; {confirmed} on known hull" if confirmed is not None else "")
        + f") · {score['n_on_hull']} on hull"
        + (f" · {suspect} far below known hull ⚠" if suspect else "")
    )


def markdown_table(results: Sequence[dict[str, Any]], methods: Sequence[str]) -> str:
    """One row per system (Table D3 names), a column per method: S.U.N. rate of its
    final-stage structures and its unique structures on the combined hull."""
    header = ["system", "group", *methods, REFERENCE + " on hull", "level", "reference coverage"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [
            f"`{result['chemsys']}`",
            result.get("exploration") or "–",
            *(_cell(result["methods"].get(m)) for m in methods),
            str(result["reference_on_hull"]),
            result["level_of_theory"],
            result["coverage"].get("label", ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(stat: dict[str, Any], suffix: str = "") -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{stat['mean']:.1f}{suffix}"
    if stat["low"] is not None:
        text += f" [{stat['low']:.1f}, {stat['high']:.1f}]"
    return text


def markdown_groups(aggregated: dict[str, Any], methods: Sequence[str]) -> str:
    """Fig. 3a–d as tables: mean S.U.N. rate and mean structures on the combined hull per
    group, with 95 % intervals."""
    lines = []
    for grouping, title in (("exploration", "system type"), ("n_elements", "number of elements")):
        groups = aggregated.get(grouping) or {}
        if not groups:
            continue
        lines += [
            f"\n**By {title}** (mean over systems [95 % interval])\n",
            "| group | systems | "
            + " | ".join(f"{m} S.U.N. %" for m in methods)
            + " | "
            + " | ".join(f"{m} S.U.N. on known hull %" for m in methods)
            + " | "
            + " | ".join(f"{m} on hull" for m in (*methods, REFERENCE))
            + " |",
            "|" + "---|" * (2 + 3 * len(methods) + 1),
        ]
        for group, row in groups.items():
            cells = [group, str(len(row["systems"]))]
            cells += [_fmt(row[m]["sun_rate"], " %") for m in methods]
            cells += [_fmt(row[m]["sun_known_hull_rate"], " %") for m in methods]
            cells += [_fmt(row[m]["on_hull"]) for m in (*methods, REFERENCE)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _leading(row: dict[str, Any], methods: Sequence[str], rate: str) -> dict[str, Any] | None:
    """The method(s) with the highest mean ``rate`` in a group, whether MatterGen alone leads,
    and whether its 95 % interval lies above every other method's."""
    rates = {m: row[m][rate] for m in methods if row[m][rate]["mean"] is not None}
    if not rates:
        return None
    best = max(r["mean"] for r in rates.values())
    leaders = sorted(m for m, r in rates.items() if r["mean"] == best)
    ours = rates.get("mattergen")
    others = [r for m, r in rates.items() if m != "mattergen"]
    separated = bool(
        ours
        and others
        and ours["low"] is not None
        and all(r["high"] is not None and ours["low"] > r["high"] for r in others)
    )
    mattergen_leads = leaders == ["mattergen"]
    return {
        "leaders": leaders,
        "mattergen_leads": mattergen_leads,
        "verdict": "yes" if mattergen_leads else "tied" if "mattergen" in leaders else "no",
        "separated": separated,
    }


def versus_paper(aggregated: dict[str, Any], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Fig. 3's claim checked per group: the paper's MatterGen has the highest S.U.N. rate in
    every group. For each group: the method(s) with the highest mean rate, whether MatterGen
    alone leads (``verdict``: yes, tied or no), and whether its 95 % interval lies above every
    other method's (``separated``; with a handful of structures per system it rarely does).
    ``known_hull`` holds the same for the rate of S.U.N. structures also stable against the
    known phases' DFT hull (``None`` where no system of the group had that check)."""
    rows = []
    for grouping, groups in aggregated.items():
        for group, row in groups.items():
            leading = _leading(row, methods, "sun_rate")
            if leading is None:
                continue
            rows.append(
                {
                    "grouping": grouping,
                    "group": group,
                    "systems": len(row["systems"]),
                    **leading,
                    "known_hull": _leading(row, methods, "sun_known_hull_rate"),
                }
            )
    return rows


def _verdict(leading: dict[str, Any] | None) -> tuple[str, str, str]:
    if leading is None:
        return "–", "–", "–"
    separated = "yes" if leading["separated"] else "no"
    return ", ".join(leading["leaders"]), leading["verdict"], separated


def markdown_versus_paper(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`versus_paper` as a table: the claim judged on the S.U.N. rate (combined hull),
    then on the rate of S.U.N. structures also on the known phases' hull."""
    lines = [
        "\n**Against the paper** (Fig. 3: MatterGen has the highest S.U.N. rate in every group; "
        "judged on the S.U.N. rate, then on the S.U.N. rate counting only structures also "
        "stable against the known phases' DFT hull, the more complete hull)\n",
        "| group | systems | highest mean S.U.N. rate | as in the paper | MatterGen's interval "
        "above the others' | highest mean S.U.N. on known hull | as in the paper | "
        "MatterGen's interval above the others' |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["group"], str(row["systems"]), *_verdict(row)]
        cells += _verdict(row.get("known_hull"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_groups(aggregated: dict[str, Any], methods: Sequence[str], path: Path) -> list[Path]:
    """Fig. 3a–d: bars of the mean S.U.N. rate (hatched: the S.U.N. structures also stable
    against the known phases' hull) and of the structures on the combined hull, by system type
    and by number of elements, with 95 % intervals; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = (
        ("exploration", "sun_rate", "S.U.N. structures (%)", methods),
        ("n_elements", "sun_rate", "S.U.N. structures (%)", methods),
        ("exploration", "on_hull", "structures on combined hull", (*methods, REFERENCE)),
        ("n_elements", "on_hull", "structures on combined hull", (*methods, REFERENCE)),
    )
    for ax, letter, (grouping, metric, label, series) in zip(
        axes.flat, "abcd", panels, strict=True
    ):
        groups = aggregated.get(grouping) or {}
        names = list(groups)
        width = 0.8 / max(len(series), 1)
        for i, method in enumerate(series):
            stats = [groups[g][method][metric] for g in names]
            means = [s["mean"] or 0.0 for s in stats]
            errors = np.array(
                [
                    [s["mean"] - s["low"], s["high"] - s["mean"]]
                    if s["low"] is not None
                    else [0.0, 0.0]
                    for s in stats
                ]
            ).T.reshape(2, len(stats))
            errors = np.clip(errors, 0.0, None)
            positions = np.arange(len(names)) + (i - (len(series) - 1) / 2) * width
            ax.bar(positions, means, width, label=method, color=COLOURS.get(method), yerr=errors)
            if metric == "sun_rate":  # the part the known phases' hull confirms, hatched
                confirmed = [groups[g][method]["sun_known_hull_rate"]["mean"] for g in names]
                ax.bar(
                    positions,
                    [c or 0.0 for c in confirmed],
                    width,
                    fill=False,
                    hatch="//",
                    edgecolor="black",
                    linewidth=0,
                    label="also on known hull" if i == 0 else None,
                )
        ax.set_xticks(np.arange(len(names)), [f"{n}" for n in names])
        ax.set_ylabel(label)
        ax.set_title(f"({letter}) by {'system type' if grouping == 'exploration' else 'elements'}")
        # room for the legend above the tallest bar (a rate reaches 100 %)
        ax.set_ylim(0, 130 if metric == "sun_rate" else 1.35 * ax.get_ylim()[1])
        ax.legend(fontsize=8, ncol=2, loc="upper left")
    fig.suptitle("Chemical-system benchmark (bars: mean over systems; lines: 95 % interval)")
    fig.tight_layout()
    return save_figure(fig, path)


def _ternary_xy(fractions: dict[str, float], elements: Sequence[str]) -> tuple[float, float]:
    """Barycentric -> Cartesian for a triangle with corners at ``elements`` (left, right,
    top)."""
    a, b, c = (fractions.get(el, 0.0) for el in elements)
    total = a + b + c
    return (b + c / 2) / total, (c * math.sqrt(3) / 2) / total


def plot_ternary_hull(result: dict[str, Any], path: Path) -> list[Path]:
    """Fig. 3e: a ternary system's combined hull, each vertex coloured by the method that
    found it (grey: the reference); PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    elements = result["chemsys"].split("-")
    if len(elements) != 3:
        raise ValueError(f"{result['chemsys']} is not a ternary system")
    points = {f"{p['source']}:{p['key']}": p for p in result["hull_points"]}
    fig, ax = plt.subplots(figsize=(6, 5.4))
    corners = [(0, 0), (1, 0), (0.5, math.sqrt(3) / 2), (0, 0)]
    ax.plot(*zip(*corners, strict=True), color="black", lw=1)
    for a, b in result.get("hull_edges", []):
        if a in points and b in points:
            xa, ya = _ternary_xy(points[a]["fractions"], elements)
            xb, yb = _ternary_xy(points[b]["fractions"], elements)
            ax.plot([xa, xb], [ya, yb], color="#bbbbbb", lw=0.8, zorder=1)
    seen = set()
    for point in points.values():
        x, y = _ternary_xy(point["fractions"], elements)
        source = point["source"]
        ax.scatter(
            x, y, s=60, color=COLOURS.get(source, "black"), edgecolor="black", zorder=3,
            label=None if source in seen else source,
        )  # fmt: skip
        seen.add(source)
        if len(point["fractions"]) > 1:
            ax.annotate(point["formula"], (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    for (x, y), el in zip(corners[:3], elements, strict=True):
        ax.annotate(el, (x, y), fontsize=12, ha="center", va="top" if y == 0 else "bottom",
                    xytext=(0, -9 if y == 0 else 7), textcoords="offset points")  # fmt: skip
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        f"{result['chemsys']}: combined hull at {result['level_of_theory']}\n"
        f"reference {result['coverage'].get('label', '')}",
        fontsize=9,
    )
    return save_figure(fig, path, bbox_inches="tight")


def write_chemsys_report(document: dict[str, Any], folder: Path) -> list[Path]:
    """``chemsys.json``, ``chemsys.md``, the Fig. 3a–d figure and one Fig. 3e diagram per
    ternary system of a benchmark document, into ``folder``; returns the files written."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    methods = document["methods"]
    results = document["results"]
    aggregated = aggregate(results, methods)
    comparison = versus_paper(aggregated, methods)
    document = {**document, "aggregate": aggregated, "versus_paper": comparison}
    written = [folder / "chemsys.json"]
    written[0].write_text(json.dumps(document, indent=1, default=str))
    budgets = ", ".join(f"{m} {n}" for m, n in document["budgets"].items())
    preset, campaign = document["preset"], document["campaign"]
    lines = [
        f"# Chemical-system benchmark ({preset['name']} preset)",
        "",
        f"Structures proposed per system: {budgets} (RSS: {preset['rss_rounds']} rounds). "
        f"Top {preset['top_k']} per method by predicted E_hull ({campaign['prerelax_model']}) "
        f"go to the final stage ({campaign['engine']}"
        + (f", {campaign['final_model']}" if campaign["engine"] == "mlff" else "")
        + "). Each cell: S.U.N. rate of a method's final-stage structures on the combined hull "
        "(every method's final structures plus the reference compounds, all at the final "
        "stage's level of theory) and its unique structures on that hull. The reference "
        "coverage says how many of the system's known hull phases the reference holds: below "
        '100 %, every hull is optimistic. "on known hull": of the S.U.N. structures, those '
        "also within the stability threshold of the DFT hull of every known MP-20 near-hull "
        "phase (MLFF energies mapped to its scale; a cross-level check, labelled as such). "
        '"far below known hull ⚠": final structures more than 0.2 eV/atom below that hull of '
        "the known phases, too good to take on trust (an MLFF artefact is likelier), and so "
        'not counted "on known hull".',
        "",
        markdown_table(results, methods),
        markdown_groups(aggregated, methods),
        markdown_versus_paper(comparison) if comparison else "",
    ]
    if document.get("pending"):
        lines += ["", "**Not scored yet:**", ""]
        for item in document["pending"]:
            why = "; ".join(item["failures"] + item["waiting"]) or "campaigns unfinished"
            lines.append(f"- `{item['chemsys']}`: {why}")
    markdown = folder / "chemsys.md"
    markdown.write_text("\n".join(lines) + "\n")
    written.append(markdown)
    if results:
        written += plot_groups(aggregated, methods, folder / "chemsys_groups")
    for result in results:
        if result["n_elements"] == 3:
            written += plot_ternary_hull(result, folder / f"chemsys_hull_{result['chemsys']}")
    return written
