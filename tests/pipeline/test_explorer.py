"""The results explorer: pages from a real campaign store, served and exported, in a real
browser (Debian's Chromium driven by Playwright; CI sets CRYSTALFORGE_REQUIRE_BROWSER=1 so
those tests cannot skip). Screenshots land in ``.test-artifacts/explorer/`` for review."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Structure
from typer.testing import CliRunner

from evaluation.io.crystals import write_cif_zip, write_extxyz
from evaluation.paths import PROJECT_ROOT
from evaluation.records import CrystalRecord
from pipeline.cli import app
from tests.conftest import l10_cuau, l12

runner = CliRunner()
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
]  # fmt: skip
ARTIFACTS = PROJECT_ROOT / ".test-artifacts" / "explorer"
CAMPAIGN = "cuau-explore"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A finished Au-Cu campaign (4 candidates, 2 to the final stage, same-level hulls)."""
    folder = tmp_path_factory.mktemp("explore")
    os.environ.setdefault("CRYSTALFORGE_CACHE", str(folder / "cache"))
    l10 = l10_cuau()
    candidates = [
        CrystalRecord(l10, "cuau-L10", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-L12", "t"),
        CrystalRecord(l12(3.98, "Cu", "Au"), "cuau3-L12", "t"),
        CrystalRecord(l12(3.75, "Au", "Cu"), "cu3au-again", "t"),  # a duplicate
    ]
    write_extxyz(candidates, folder / "candidates.extxyz")
    write_cif_zip([CrystalRecord(l10, "CuAu-L10", "ref")], folder / "reference.zip")
    result = runner.invoke(
        app,
        [
            "campaign", "run", "Au-Cu", "--generator", "file",
            "--input", str(folder / "candidates.extxyz"), "--num-candidates", "4",
            "--top-k", "2", "--max-steps", "40", "--hull", "same-level",
            "--reference", str(folder / "reference.zip"), "--store", str(folder / "store"),
            "--campaign-id", CAMPAIGN,
            "--config", str(PROJECT_ROOT / "tests" / "flows" / "campaign_test.yaml"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder / "store"


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    result = runner.invoke(app, ["explore", "--store", str(store), "--export", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


# ------------------------------------------------------------------------- without a browser
def test_the_export_has_every_page_and_loads_nothing_from_the_internet(exported):
    assert (exported / "index.html").is_file() and (exported / "benchmarks.html").is_file()
    assert (exported / "campaign" / f"{CAMPAIGN}.html").is_file()
    pages = sorted((exported / "candidate" / CAMPAIGN).glob("*.html"))
    assert [p.stem for p in pages] == ["cu3au-L12", "cu3au-again", "cuau-L10", "cuau3-L12"]
    for page in exported.rglob("*.html"):
        html = page.read_text()
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], page
        for source in sources:  # every local link resolves inside the export
            if not source.startswith("#"):
                assert (page.parent / source).resolve().is_file(), (page, source)


def test_a_candidate_downloads_as_cif_and_extxyz_that_pymatgen_and_ase_read(exported):
    from ase.io import read

    stem = exported / "candidate" / CAMPAIGN / "cu3au-L12"
    structure = Structure.from_file(f"{stem}.cif")
    assert structure.composition.reduced_formula == "Cu3Au"
    atoms = read(io.StringIO(Path(f"{stem}.extxyz").read_text()), format="extxyz")
    assert sorted(atoms.get_chemical_symbols()) == ["Au", "Cu", "Cu", "Cu"]


def test_the_campaign_page_names_the_level_reference_and_coverage_of_each_hull(exported):
    html = (exported / "campaign" / f"{CAMPAIGN}.html").read_text()
    assert "Hull at the prerelax level (mlff:chgnet-0.3.0)" in html
    assert "Hull at the final level (mlff:sevennet-7net-0)" in html
    assert "relaxed with mlff:sevennet-7net-0" in html  # the reference the points lie on
    assert 'id="candidates"' in html and html.count('class="candidate-row"') == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--store", "no-such-store"], "--store no-such-store: no results store there"),
        (["--export", "a-file.txt"], "--export a-file.txt: exists and is not a folder"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(store, tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file.txt").write_text("x")
    if "--store" not in options:
        options = [*options, "--store", str(store)]
    result = runner.invoke(app, ["explore", *options])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "no-such-store").exists()


# --------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file() or _playwright_missing():
        if os.environ.get("CRYSTALFORGE_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "Chromium and Playwright are required here (CRYSTALFORGE_REQUIRE_BROWSER=1)"
            )
        pytest.skip("no /usr/bin/chromium or playwright (make install-browser)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def _playwright_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is None


@pytest.fixture(scope="module")
def server(store):
    """``crystalforge explore`` on a free port, as a user starts it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "explore", "--store", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = process.stdout.readline()  # "explorer on http://127.0.0.1:PORT/ (read-only; ...)"
    match = re.search(r"(http://\S+/)", line)
    assert match, line
    yield match.group(1)
    process.terminate()
    process.wait(timeout=10)


def _canvas_is_drawn(page, name: str) -> bool:
    """The 3D viewer's screenshot has more than a background: many distinct colours."""
    from PIL import Image

    png = page.locator("#viewer").screenshot(path=str(ARTIFACTS / f"{name}-viewer.png"))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(set(image.getdata())) > 50


def _points_on_hull(page, stage: str) -> int:
    return page.evaluate(
        """stage => document.querySelector(`.hull[data-stage="${stage}"] .js-plotly-plot`).data
            .filter(trace => (trace.name || "").startsWith("candidates"))
            .reduce((n, trace) => n + (trace.x || trace.a).length, 0)""",
        stage,
    )


def _walk_through(page, start: str, name: str) -> None:
    """Campaigns → the campaign → a candidate, by clicking, checking each page."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(start)
    row = page.locator("#campaigns tbody tr", has_text=CAMPAIGN)
    assert row.count() == 1 and "completed" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / f"{name}-campaigns.png"), full_page=True)
    row.locator("a").click()
    page.wait_for_selector(".hull .js-plotly-plot")
    expected = int(page.locator('.hull[data-stage="final"]').get_attribute("data-points"))
    assert expected >= 1 and _points_on_hull(page, "final") == expected
    page.screenshot(path=str(ARTIFACTS / f"{name}-campaign.png"), full_page=True)
    page.locator("#candidates a", has_text="cu3au-L12").click()
    page.wait_for_function("document.getElementById('viewer')?.dataset.atoms !== undefined")
    assert page.locator("#viewer").get_attribute("data-atoms") == "4"
    assert page.locator("#legend span").all_inner_texts() == ["Au", "Cu"]  # element colours
    assert _canvas_is_drawn(page, name)
    page.locator("#supercell").check()  # 2x2x2: eight times the atoms
    page.wait_for_function("document.getElementById('viewer').dataset.atoms === '32'")
    page.screenshot(path=str(ARTIFACTS / f"{name}-candidate.png"), full_page=True)
    assert errors == []


def test_the_served_explorer_walks_from_campaigns_to_a_3d_structure_and_a_cif(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _walk_through(page, server, "served")
    with page.expect_download() as download:
        page.locator("a", has_text="CIF").click()
    structure = Structure.from_str(Path(download.value.path()).read_text(), fmt="cif")
    assert structure.composition.reduced_formula == "Cu3Au"
    page.close()


def test_the_static_export_opens_from_disk_with_the_same_content(browser, exported):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _walk_through(page, (exported / "index.html").as_uri(), "static")
    page.close()


def test_the_candidate_table_sorts_and_filters_in_the_browser(browser, exported):
    page = browser.new_page()
    page.goto((exported / "campaign" / f"{CAMPAIGN}.html").as_uri())
    values = (
        "Array.from(document.querySelectorAll("
        "'#candidates tbody tr:not([hidden]) td:nth-child(4)')).map(c => c.dataset.value)"
    )
    page.locator("#candidates th", has_text="E_hull").click()
    shown = [float(v) for v in page.evaluate(values) if v]
    assert shown == sorted(shown)
    page.locator('input.filter[data-table="candidates"]').fill("cuau3")
    assert page.locator("#candidates tbody tr:not([hidden])").count() == 1
    page.close()


def test_a_click_on_a_candidate_in_the_hull_diagram_opens_its_page(browser, exported):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((exported / "campaign" / f"{CAMPAIGN}.html").as_uri())
    hull = page.locator('.hull[data-stage="final"] .js-plotly-plot')
    hull.scroll_into_view_if_needed()
    # the candidates' traces come after pymatgen's; their markers are the last points drawn
    point = hull.locator(".scatterlayer .trace").last.locator("path.point").first
    box = point.bounding_box()
    with page.expect_navigation():
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert "/candidate/" in page.url and page.locator("#viewer").count() == 1
    page.close()
