"""The explorer's figures (plotly): a campaign's hull diagram and its E_hull histogram.

The hull is the reference's, drawn by pymatgen's ``PDPlotter`` (binary: formation energy
against composition; ternary: the 2D Gibbs triangle); the candidates are laid over it, not
added to it, so the picture shows the hull their recorded E_hull was measured against. Systems
of four or more elements get an E_hull-against-composition view instead (a 3D tetrahedron of
a quaternary hides more than it shows; quinaries have no picture at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymatgen.core import Composition

from evaluation.hull.core import EntryHullReference

#: Candidate marker colours: S.U.N., stable but not S.U.N., above the threshold.
COLOURS = {"sun": "#2ca02c", "stable": "#1f77b4", "unstable": "#d62728"}


@dataclass(frozen=True)
class HullPoint:
    """A candidate on the hull diagram."""

    key: str
    formula: str
    formation_energy_per_atom: float | None
    e_above_hull: float | None
    sun: bool | None
    stable: bool | None
    url: str = ""  # the candidate's page: a click on the point opens it

    @property
    def kind(self) -> str:
        return "sun" if self.sun else "stable" if self.stable else "unstable"


def _hover(point: HullPoint, level: str) -> str:
    e_hull = "n/a" if point.e_above_hull is None else f"{point.e_above_hull:.3f} eV/atom"
    return f"{point.key}<br>{point.formula}<br>E_hull {e_hull} ({level})"


def hull_figure(
    reference: EntryHullReference, chemsys: str, points: Sequence[HullPoint], title: str
) -> Any:
    """The hull of ``reference`` in ``chemsys`` with ``points`` laid over it.

    Parameters
    ----------
    reference
        The stage's hull reference (its level of theory labels every hover text).
    chemsys
        ``"Li-Co-O"``; systems of 2–3 elements get a phase diagram, larger ones an
        E_hull-against-composition view.
    points
        Candidates with the formation energy and E_hull their stage recorded.
    title
        The figure title (say which stage and what reference).
    """
    import plotly.graph_objects as go

    elements = chemsys.split("-")
    level = reference.level_of_theory
    if len(elements) > 3:
        return _ehull_by_composition(elements, points, level, title)
    from pymatgen.analysis.phase_diagram import PDPlotter

    diagram = reference.phase_diagram(chemsys)
    figure = PDPlotter(diagram, backend="plotly", show_unstable=0.5).get_plot(label_stable=True)
    for kind, colour in COLOURS.items():
        chosen = [p for p in points if p.kind == kind and p.formation_energy_per_atom is not None]
        if not chosen:
            continue
        style = {
            "mode": "markers",
            "name": f"candidates: {kind.replace('sun', 'S.U.N.')}",
            "marker": {"color": colour, "size": 9, "symbol": "diamond"},
            "hovertext": [_hover(p, level) for p in chosen],
            "hoverinfo": "text",
            "customdata": [p.url for p in chosen],
        }
        compositions = [Composition(p.formula) for p in chosen]
        if len(elements) == 2:  # pymatgen's binary axis: the fraction of its second element
            second = diagram.elements[1]
            x = [c.get_atomic_fraction(second) for c in compositions]
            y = [p.formation_energy_per_atom for p in chosen]
            figure.add_trace(go.Scatter(x=x, y=y, **style))
        else:  # pymatgen's 2D ternary: a, b, c are the fractions of its elements, in order
            a, b, c = (
                [comp.get_atomic_fraction(element) for comp in compositions]
                for element in diagram.elements
            )
            figure.add_trace(go.Scatterternary(a=a, b=b, c=c, **style))
    # pymatgen puts its legend at the top left, where the title goes
    figure.update_layout(
        title={"text": title, "y": 0.98}, showlegend=True, margin={"t": 70}, height=520
    )
    return figure


def _ehull_by_composition(
    elements: Sequence[str], points: Sequence[HullPoint], level: str, title: str
) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure()
    for kind, colour in COLOURS.items():
        chosen = [p for p in points if p.kind == kind and p.e_above_hull is not None]
        if not chosen:
            continue
        figure.add_trace(
            go.Scatter(
                x=[Composition(p.formula).reduced_formula for p in chosen],
                y=[p.e_above_hull for p in chosen],
                mode="markers",
                name=f"candidates: {kind.replace('sun', 'S.U.N.')}",
                marker={"color": colour, "size": 9, "symbol": "diamond"},
                hovertext=[_hover(p, level) for p in chosen],
                hoverinfo="text",
                customdata=[p.url for p in chosen],
            )
        )
    figure.add_hline(y=0, line_dash="dot", annotation_text="hull")
    figure.update_layout(
        title={"text": title},
        xaxis_title=f"composition ({'-'.join(elements)})",
        yaxis_title=f"E_hull (eV/atom, {level})",
        xaxis={"categoryorder": "category ascending"},
    )
    return figure


def ehull_histogram(values_by_level: dict[str, Sequence[float]], title: str) -> Any:
    """Histogram of a campaign's E_hull values (eV/atom), one series per level of theory
    (a candidate counts at its most refined stage; levels are never pooled)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for level, values in values_by_level.items():
        figure.add_trace(go.Histogram(x=list(values), nbinsx=30, name=level, opacity=0.75))
    figure.update_layout(
        title={"text": title},
        xaxis_title="E_hull (eV/atom)",
        yaxis_title="candidates",
        barmode="overlay",
        bargap=0.05,
    )
    return figure


def chemsys_groups(aggregated: dict[str, Any], methods: Sequence[str]) -> Any:
    """Fig. 3a–b: each method's mean S.U.N. rate per group (by system type, by number of
    elements) with its 95 % interval."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from evaluation.discovery.report import COLOURS as METHOD_COLOURS

    groupings = [g for g in ("exploration", "n_elements") if aggregated.get(g)]
    figure = make_subplots(
        rows=1,
        cols=max(1, len(groupings)),
        subplot_titles=[
            {"exploration": "by system type", "n_elements": "by elements"}[g] for g in groupings
        ],
    )
    for column, grouping in enumerate(groupings, start=1):
        groups = aggregated[grouping]
        for method in methods:
            stats = [groups[g][method]["sun_rate"] for g in groups]
            means = [s["mean"] for s in stats]
            figure.add_trace(
                go.Bar(
                    x=list(groups),
                    y=means,
                    name=method,
                    legendgroup=method,
                    showlegend=column == 1,
                    marker_color=METHOD_COLOURS.get(method),
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [
                            (s["high"] - s["mean"]) if s["high"] is not None else 0 for s in stats
                        ],
                        "arrayminus": [
                            (s["mean"] - s["low"]) if s["low"] is not None else 0 for s in stats
                        ],
                    },
                ),
                row=1,
                col=column,
            )
    figure.update_yaxes(title_text="S.U.N. rate (%)", range=[0, 100])
    figure.update_layout(barmode="group", title={"text": "S.U.N. rate, mean over systems [95 %]"})
    return figure


def property_hits(document: dict[str, Any]) -> Any:
    """Fig. 5g–h: structures meeting the constraint per budget of property calculations."""
    import plotly.graph_objects as go

    budgets = document["budgets"]
    figure = go.Figure()
    for method, label in (("mattergen", "MatterGen (S.U.N.)"), ("screening", "screening")):
        arm = document["methods"][method]
        if method == "screening" and arm.get("n_pool") == 0:
            continue  # fully labelled data: nothing to screen
        figure.add_trace(
            go.Scatter(
                x=budgets,
                y=[arm["hits"][str(b)]["hits"] for b in budgets],
                mode="lines+markers",
                name=label,
            )
        )
    figure.add_hline(
        y=document["methods"]["labelled data"]["hits"],
        line_dash="dash",
        annotation_text="labelled data",
    )
    figure.update_layout(
        title={
            "text": f"{document['property']} >= {document['threshold']:g} "
            f"({document['level_of_theory']})"
        },
        xaxis_title="property calculations (budget)",
        yaxis_title="structures meeting the constraint",
    )
    return figure
