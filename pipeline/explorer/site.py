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
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any

from pipeline.explorer import figures, views
from pipeline.results_view import space_group
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
    """The explorer's pages over one results store (read-only).

    A site reads each campaign list and candidate list once and keeps them: the export uses
    one site for all pages, the server a new one per request (a running campaign's page then
    shows its latest state).
    """

    store: ResultsStore
    _read: dict[str, Any] = field(default_factory=dict, repr=False)

    def _campaign_rows(self) -> list[views.CampaignRow]:
        if "campaigns" not in self._read:
            self._read["campaigns"] = views.campaign_rows(self.store)
        return self._read["campaigns"]

    def _candidates(self, campaign_id: str) -> list[dict[str, Any]]:
        key = f"candidates/{campaign_id}"
        if key not in self._read:
            self._read[key] = self.store.query_candidates(campaign_id)
        return self._read[key]

    def _candidate_document(self, campaign_id: str, candidate_id: str) -> dict[str, Any]:
        for document in self._candidates(campaign_id):
            if document["candidate_id"] == candidate_id:
                return document
        raise KeyError(f"{campaign_id}/{candidate_id}")

    @cached_property
    def _templates(self) -> Any:
        return _environment()

    def _render(self, template: str, depth: int, **context: Any) -> str:
        root = "../" * depth
        return self._templates.get_template(template).render(root=root, **context)

    # ---------------------------------------------------------------------------- pages
    def index(self) -> str:
        """The campaigns page."""
        rows = self._campaign_rows()
        return self._render(
            "index.html",
            0,
            rows=rows,
            funnel_labels=[label for _, label in views.FUNNEL],
            title="Campaigns",
        )

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
        candidates = self._candidates(campaign_id)
        table = [views.candidate_row(d) for d in candidates]
        references = views.hull_references(self.store, document)
        threshold = (document.get("config") or {}).get("stability_threshold", 0.1)
        hulls = [
            hull
            for stage in views.STAGES
            if (hull := _hull_section(stage, row.chemsys, candidates, references, threshold))
        ]
        by_level = views.e_above_hull_by_level(table)
        histogram = (
            _figure_html(
                figures.ehull_histogram(by_level, "E_hull of every candidate (most refined stage)"),
                "ehull-histogram",
            )
            if by_level
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
        document = self._candidate_document(campaign_id, candidate_id)
        structure = _best_structure(document)
        return self._render(
            "candidate.html",
            2,
            title=f"{document.get('formula', '')} · {candidate_id}",
            document=document,
            row=views.candidate_row(document),
            stages=views.stage_views(document),
            space_group=space_group(document),
            lattice=structure.lattice,
            cif=_cif(structure),
            provenance=json.dumps(document.get("provenance") or {}, indent=1, default=str),
            file_stem=slug(candidate_id),
        )

    def benchmarks(self) -> str:
        """The benchmark documents in the store: the chemical-system benchmark's table, group
        figure and comparison with the paper; each property benchmark's hits per budget."""
        from evaluation.discovery.report import aggregate, versus_paper

        sections = []
        for document in sorted(
            self.store.benchmarks.query({}), key=lambda d: d.get("updated_at", ""), reverse=True
        ):
            section = {"document": document, "id": document.get("benchmark_id", "")}
            if document.get("kind") == "chemsys" and document.get("results"):
                methods = document["methods"]
                aggregated = aggregate(document["results"], methods)
                section["figure"] = _figure_html(
                    figures.chemsys_groups(aggregated, methods), f"groups-{slug(section['id'])}"
                )
                section["versus_paper"] = versus_paper(aggregated, methods)
            elif document.get("kind") == "property":
                section["figure"] = _figure_html(
                    figures.property_hits(document), f"hits-{slug(section['id'])}"
                )
            sections.append(section)
        return self._render("benchmarks.html", 0, title="Benchmarks", sections=sections)

    def downloads(self, campaign_id: str, candidate_id: str) -> dict[str, bytes]:
        """A candidate's most relaxed structure as CIF and extxyz."""
        structure = _best_structure(self._candidate_document(campaign_id, candidate_id))
        return {".cif": _cif(structure).encode(), ".extxyz": _extxyz(structure).encode()}

    # ------------------------------------------------------------------------ by path
    def paths(self) -> Iterator[str]:
        """Every page and file of the site, as paths relative to its root."""
        yield "index.html"
        yield "benchmarks.html"
        for row in self._campaign_rows():
            yield f"campaign/{slug(row.campaign_id)}.html"
            for document in self._candidates(row.campaign_id):
                stem = f"candidate/{slug(row.campaign_id)}/{slug(document['candidate_id'])}"
                yield from (f"{stem}{suffix}" for suffix in (".html", ".cif", ".extxyz"))
        yield from (f"static/{name}" for name in ("plotly.min.js", *STATIC_FILES))

    def render(self, path: str) -> tuple[bytes, str]:
        """The content and media type of the page or file at ``path`` (relative to the root).

        Raises
        ------
        KeyError
            When the site has nothing at ``path``.
        """
        parts = path.split("/")
        if path in ("", "index.html"):
            return self.index().encode(), HTML
        if path == "benchmarks.html":
            return self.benchmarks().encode(), HTML
        if parts[0] == "static" and len(parts) == 2:
            return _static_file(parts[1]), MEDIA_TYPES.get(Path(parts[1]).suffix, TEXT)
        if parts[0] == "campaign" and len(parts) == 2 and parts[1].endswith(".html"):
            return self.campaign(self._campaign_id(parts[1].removesuffix(".html"))).encode(), HTML
        if parts[0] == "candidate" and len(parts) == 3:
            campaign_id = self._campaign_id(parts[1])
            stem, suffix = Path(parts[2]).stem, Path(parts[2]).suffix
            candidate_id = self._candidate_id(campaign_id, stem)
            if suffix == ".html":
                return self.candidate(campaign_id, candidate_id).encode(), HTML
            downloads = self.downloads(campaign_id, candidate_id)
            if suffix in downloads:
                return downloads[suffix], TEXT
        raise KeyError(path)

    def _campaign_id(self, campaign_slug: str) -> str:
        for row in self._campaign_rows():
            if slug(row.campaign_id) == campaign_slug:
                return row.campaign_id
        raise KeyError(campaign_slug)

    def _candidate_id(self, campaign_id: str, candidate_slug: str) -> str:
        for document in self._candidates(campaign_id):
            if slug(document["candidate_id"]) == candidate_slug:
                return document["candidate_id"]
        raise KeyError(candidate_slug)


HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": TEXT,
}


def _static_file(name: str) -> bytes:
    """An asset: plotly.js from the plotly package, the others from ``static/``."""
    if name == "plotly.min.js":
        from plotly.offline import get_plotlyjs

        return get_plotlyjs().encode()
    if name not in STATIC_FILES:
        raise KeyError(name)
    return (files("pipeline.explorer") / "static" / name).read_bytes()


def export(store: ResultsStore, folder: Path) -> int:
    """Write the whole site under ``folder`` (``index.html`` at its top); returns the number
    of files written."""
    site = Site(store)
    count = 0
    for relative in site.paths():
        content, _ = site.render(relative)
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        count += 1
    return count


def _hull_section(
    stage: str,
    chemsys: str,
    candidates: list[dict[str, Any]],
    references: dict[str, Any],
    threshold: float,
) -> dict[str, Any] | None:
    """The hull diagram of one stage: its reference at the stage's level of theory with the
    candidates it placed; ``None`` when the store holds no such reference."""
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
        return None
    points = [_hull_point(d, stage, threshold) for d in candidates]
    points = [p for p in points if p.formation_energy_per_atom is not None]
    figure = figures.hull_figure(reference, chemsys, points, f"{stage}: {reference.name}")
    return {
        "stage": stage,
        "level": level,
        "reference": reference.name,
        "n_points": len(points),
        "html": _figure_html(figure, f"hull-{stage}"),
    }


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
        url=f"../candidate/{slug(document['campaign_id'])}/{slug(document['candidate_id'])}.html",
    )


# ---------------------------------------------------------------------------- structures
def _best_structure(document: dict[str, Any]) -> Any:
    from pymatgen.core import Structure

    ranked = views.ranked_stage(document)
    return Structure.from_dict(ranked.get("structure") or document["structure"])


def _cif(structure: Any) -> str:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure))


def _extxyz(structure: Any) -> str:
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    buffer = io.StringIO()
    write(buffer, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
    return buffer.getvalue()
