"""The explorer's pages: rendered from the results store, served or written to a folder.

Page paths (relative links throughout, so a static export opens from ``file://``)::

    index.html                                  the campaigns
    benchmarks.html                             the benchmark documents
    campaign/<campaign>.html                    one campaign: funnel, hull, histogram, candidates
    candidate/<campaign>/<candidate>.html       one candidate: 3D structure, stages, provenance
    candidate/<campaign>/<candidate>.cif|.extxyz
    static/...                                  plotly.js, 3Dmol.js, explorer.js, explorer.css
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any

from pipeline.explorer import figures, views
from pipeline.store import ResultsStore

STATIC_FILES = ("3Dmol-min.js", "3Dmol-LICENSE.txt", "explorer.js", "explorer.css")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def slug(identifier: str) -> str:
    """A file-name-safe form of a campaign or candidate id (``/`` and the like become ``_``)."""
    return _SAFE.sub("_", identifier)


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("pipeline.explorer", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["ev"] = lambda v: "–" if v is None else f"{v:.3f}"
    environment.filters["mark"] = lambda v: "–" if v is None else ("yes" if v else "no")
    environment.filters["slug"] = slug
    environment.filters["minutes"] = lambda s: "–" if s is None else f"{s / 60:.1f} min"
    return environment


def _figure_html(figure: Any, element_id: str) -> str:
    """A plotly figure as a ``<div>`` (plotly.js is loaded once per page, from ``static/``)."""
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=element_id)


@dataclass
class Site:
    """The explorer's pages over one results store (read-only)."""

    store: ResultsStore

    @cached_property
    def _templates(self) -> Any:
        return _environment()

    def _render(self, template: str, depth: int, **context: Any) -> str:
        root = "../" * depth
        return self._templates.get_template(template).render(root=root, **context)

    # ---------------------------------------------------------------------------- pages
    def index(self) -> str:
        """The campaigns page."""
        rows = views.campaign_rows(self.store)
        return self._render("index.html", 0, rows=rows, title="Campaigns")

    def campaign(self, campaign_id: str) -> str:
        """One campaign's page.

        Raises
        ------
        KeyError
            When the store has no such campaign.
        """
        document = self.store.campaign(campaign_id)
        if document is None:
            raise KeyError(campaign_id)
        row = views.campaign_row(document)
        candidates = self.store.query_candidates(campaign_id)
        table = [views.candidate_row(d) for d in candidates]
        references = views.hull_references(self.store, campaign_id)
        hulls = []
        for stage in views.STAGES:
            level = next(
                (
                    (d.get(stage) or {}).get("level_of_theory")
                    for d in candidates
                    if (d.get(stage) or {}).get("level_of_theory")
                ),
                None,
            )
            reference = references.get(level) if level else None
            if not isinstance(reference, views.EntryHullReference):
                continue
            threshold = (document.get("config") or {}).get("stability_threshold", 0.1)
            points = [_hull_point(d, stage, threshold) for d in candidates]
            points = [p for p in points if p.formation_energy_per_atom is not None]
            title = f"{stage}: {reference.name}"
            figure = figures.hull_figure(reference, row.chemsys, points, title)
            hulls.append(
                {
                    "stage": stage,
                    "level": level,
                    "reference": reference.name,
                    "n_points": len(points),
                    "html": _figure_html(figure, f"hull-{stage}"),
                }
            )
        values = views.e_above_hull_values(table)
        levels = sorted({r.level for r in table if r.e_above_hull is not None})
        histogram = (
            _figure_html(
                figures.ehull_histogram(values, ", ".join(levels), "E_hull of every candidate"),
                "ehull-histogram",
            )
            if values
            else ""
        )
        return self._render(
            "campaign.html",
            1,
            title=campaign_id,
            campaign=row,
            document=document,
            table=table,
            hulls=hulls,
            histogram=histogram,
        )

    def candidate(self, campaign_id: str, candidate_id: str) -> str:
        """One candidate's page.

        Raises
        ------
        KeyError
            When the store has no such candidate.
        """
        document = self.store.candidate(f"{campaign_id}/{candidate_id}")
        if document is None:
            raise KeyError(f"{campaign_id}/{candidate_id}")
        structure = _best_structure(document)
        return self._render(
            "candidate.html",
            2,
            title=f"{document.get('formula', '')} · {candidate_id}",
            document=document,
            row=views.candidate_row(document),
            stages=views.stage_views(document),
            space_group=_space_group(structure),
            lattice=structure.lattice,
            cif=_cif(structure),
            provenance=json.dumps(document.get("provenance") or {}, indent=1, default=str),
            file_stem=slug(candidate_id),
        )

    def benchmarks(self) -> str:
        """The benchmark documents in the store (chemical-system and property benchmarks)."""
        documents = list(self.store.benchmarks.query({})) if self.store.benchmarks else []
        return self._render("benchmarks.html", 0, title="Benchmarks", documents=documents)

    def downloads(self, campaign_id: str, candidate_id: str) -> dict[str, bytes]:
        """A candidate's most relaxed structure as CIF and extxyz."""
        document = self.store.candidate(f"{campaign_id}/{candidate_id}")
        if document is None:
            raise KeyError(f"{campaign_id}/{candidate_id}")
        structure = _best_structure(document)
        return {".cif": _cif(structure).encode(), ".extxyz": _extxyz(structure).encode()}

    # --------------------------------------------------------------------------- export
    def pages(self) -> Iterator[tuple[str, bytes]]:
        """Every page and file of the site as ``(relative path, content)``."""
        yield "index.html", self.index().encode()
        yield "benchmarks.html", self.benchmarks().encode()
        for row in views.campaign_rows(self.store):
            yield f"campaign/{slug(row.campaign_id)}.html", self.campaign(row.campaign_id).encode()
            for document in self.store.query_candidates(row.campaign_id):
                stem = f"candidate/{slug(row.campaign_id)}/{slug(document['candidate_id'])}"
                page = self.candidate(row.campaign_id, document["candidate_id"])
                yield f"{stem}.html", page.encode()
                for suffix, content in self.downloads(
                    row.campaign_id, document["candidate_id"]
                ).items():
                    yield f"{stem}{suffix}", content
        yield from static_files()


def static_files() -> Iterator[tuple[str, bytes]]:
    """The assets every page loads: plotly.js (from the plotly package), 3Dmol.js and the
    explorer's own script and style."""
    from plotly.offline import get_plotlyjs

    yield "static/plotly.min.js", get_plotlyjs().encode()
    folder = files("pipeline.explorer") / "static"
    for name in STATIC_FILES:
        yield f"static/{name}", (folder / name).read_bytes()


def export(store: ResultsStore, folder: Path) -> int:
    """Write the whole site under ``folder`` (``index.html`` at its top); returns the number
    of files written."""
    count = 0
    for relative, content in Site(store).pages():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        count += 1
    return count


def _hull_point(document: dict[str, Any], stage: str, threshold: float) -> figures.HullPoint:
    result = document.get(stage) or {}
    e_hull = result.get("e_above_hull")
    return figures.HullPoint(
        key=document["candidate_key"],
        formula=document.get("formula", ""),
        formation_energy_per_atom=result.get("formation_energy_per_atom"),
        e_above_hull=e_hull,
        sun=document.get("sun"),
        stable=None if e_hull is None else e_hull <= threshold,
    )


# ---------------------------------------------------------------------------- structures
def _best_structure(document: dict[str, Any]) -> Any:
    from pymatgen.core import Structure

    ranked = views.ranked_stage(document)
    return Structure.from_dict(ranked.get("structure") or document["structure"])


def _space_group(structure: Any) -> str:
    from pipeline.results_view import SYMPREC

    try:
        symbol, number = structure.get_space_group_info(symprec=SYMPREC)
    except Exception:  # noqa: BLE001 - spglib fails on broken cells; the page still renders
        return "?"
    return f"{symbol} ({number})"


def _cif(structure: Any) -> str:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure))


def _extxyz(structure: Any) -> str:
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    buffer = io.StringIO()
    write(buffer, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
    return buffer.getvalue()
