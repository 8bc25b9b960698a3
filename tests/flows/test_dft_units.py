"""The DFT stage's logic without running DFT: tasks, input sets, retries, summaries, hulls."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from flows.dft import tasks_maker
from flows.dft.gpaw import (
    DFTTaskError,
    _check_not_exploded,
    read_task_tags,
    task_tags,
    with_retries,
)
from flows.dft.gpaw_run import GpawTasksMaker, summarise_gpaw_run
from flows.dft.gpaw_settings import GpawInputSet
from flows.dft.hull import build_dft_hull, dft_reference_structures
from flows.dft.schema import DFTResult, parse_tasks, properties_to_tasks
from flows.dft.stage import dft_stage_row


def rocksalt(a: float = 5.69) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0] * 3, [0.5] * 3])


def test_tasks_run_in_fixed_order_and_unknown_tasks_are_refused():
    assert parse_tasks("elastic,relax,band_gap") == ("relax", "band_gap", "elastic")
    with pytest.raises(ValueError, match="unknown DFT task"):
        parse_tasks("relax,phonons")
    with pytest.raises(ValueError, match="no DFT task"):
        parse_tasks(",")


def test_campaign_properties_map_to_tasks_after_relax_and_static():
    assert properties_to_tasks(None) == ("relax", "static")
    assert properties_to_tasks("bulk_modulus,band_gap") == (
        "relax",
        "static",
        "band_gap",
        "elastic",
    )
    with pytest.raises(ValueError, match="unknown propert"):
        properties_to_tasks(["hardness"])


def test_level_of_theory_names_the_energy_changing_settings_and_retries_keep_it():
    settings = GpawInputSet()
    assert settings.level_of_theory == "dft:gpaw-pbe-pw500-k3.5"
    safer = settings.safer().safer()
    assert safer.level_of_theory == settings.level_of_theory
    assert safer.attempt == 2 and safer.mixer_beta < 0.1 and safer.maxiter > settings.maxiter
    assert safer.smearing_width > settings.smearing_width
    assert GpawInputSet(ecut=600).level_of_theory != settings.level_of_theory


def test_spin_only_for_d_and_f_elements_and_solid_oxygen():
    settings = GpawInputSet()
    assert settings.initial_magmoms(rocksalt()) is None
    feo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.3), ["Fe", "O"], [[0] * 3, [0.5] * 3])
    moments = settings.initial_magmoms(feo)
    assert sorted(set(moments)) == [0.0, 5.0]  # MP's Fe moment, none on O
    oxygen = Structure(Lattice.cubic(4.0), ["O", "O"], [[0, 0, 0], [0.3, 0, 0]])
    assert settings.initial_magmoms(oxygen) == [1.0, 1.0]
    assert GpawInputSet(spin="off").initial_magmoms(feo) is None
    assert all(m > 0 for m in GpawInputSet(spin="on").initial_magmoms(rocksalt()))


def test_unconverged_scf_is_retried_with_safer_settings_then_reported():
    from gpaw import KohnShamConvergenceError

    seen = []

    def flaky(settings):
        seen.append(settings.attempt)
        if settings.attempt < 2:
            raise KohnShamConvergenceError("not converged")
        return "energy"

    result, attempts = with_retries(GpawInputSet(), "static", flaky)
    assert result == "energy" and seen == [0, 1, 2] and len(attempts) == 3

    def hopeless(settings):
        raise KohnShamConvergenceError("not converged")

    with pytest.raises(DFTTaskError, match="static: SCF did not converge in 2 attempts"):
        with_retries(GpawInputSet(max_attempts=2), "static", hopeless)


def test_other_errors_are_not_retried():
    calls = []

    def broken(settings):
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        with_retries(GpawInputSet(), "relax", broken)
    assert len(calls) == 1


def test_an_exploded_relaxation_is_an_error():
    before = rocksalt()
    with pytest.raises(DFTTaskError, match="exploded: volume"):
        _check_not_exploded(before, before.copy().scale_lattice(before.volume * 5), "relax")
    collapsed = before.copy()
    collapsed.translate_sites([1], [-0.49, -0.49, -0.49])
    with pytest.raises(DFTTaskError, match="closer than 0.5"):
        _check_not_exploded(before, collapsed, "relax")
    _check_not_exploded(before, before.copy().scale_lattice(before.volume * 1.1), "relax")


def test_task_tags_round_trip():
    assert read_task_tags(["x", *task_tags(1.5, ["attempt 1: a", "attempt 2: b"])]) == (
        1.5,
        ["attempt 1: a", "attempt 2: b"],
    )


def _relax_doc(structure: Structure, energy_per_atom: float) -> dict:
    return {
        "structure": structure.as_dict(),
        "output": {"energy": energy_per_atom * len(structure)},
        "tags": task_tags(2.0, ["attempt 1: default"]),
    }


def test_summary_of_a_full_run():
    s = rocksalt()
    result = DFTResult(
        **summarise_gpaw_run.original(
            s,
            ["relax", "static", "band_gap"],
            GpawInputSet().model_dump(),
            relax=_relax_doc(s, -3.0),
            static=_relax_doc(s, -3.1),
            band_gap={"band_gap": 5.0, "is_gap_direct": True, "seconds": 3.0, "attempts": ["a"]},
        )
    )
    assert result.status == "ok" and result.energy_per_atom == pytest.approx(-3.1)
    assert result.band_gap == 5.0 and result.level_of_theory == "dft:gpaw-pbe-pw500-k3.5"
    assert result.seconds == pytest.approx(7.0)


def test_summary_records_failed_tasks_and_a_run_without_energy_fails():
    s = rocksalt()
    settings = GpawInputSet().model_dump()
    partial = summarise_gpaw_run.original(
        s, ["relax", "static", "elastic"], settings, relax=_relax_doc(s, -3.0), static=None
    )
    assert partial["status"] == "failed"  # asked for a static that did not run: no energy
    assert "static did not finish" in partial["reason"]
    gap_lost = summarise_gpaw_run.original(
        s, ["relax", "static", "band_gap"], settings, relax=_relax_doc(s, -3.0),
        static=_relax_doc(s, -3.1), band_gap=None,
    )  # fmt: skip
    assert gap_lost["status"] == "partial" and gap_lost["energy_per_atom"] == pytest.approx(-3.1)
    assert gap_lost["tasks"]["band_gap"]["status"] == "failed"
    nothing = summarise_gpaw_run.original(s, ["relax", "static"], settings)
    assert nothing["status"] == "failed" and nothing["structure"] is None


def test_stage_row_keeps_partial_runs_usable_and_failed_runs_failed():
    s = rocksalt()
    partial = summarise_gpaw_run.original(
        s, ["relax", "static", "band_gap"], GpawInputSet().model_dump(),
        relax=_relax_doc(s, -3.0), static=_relax_doc(s, -3.1),
    )  # fmt: skip
    row = dft_stage_row.original("c1", s.as_dict(), partial)
    assert row["status"] == "ok" and row["dft_status"] == "partial"
    assert row["properties"]["band_gap"] is None and row["rmsd"] == pytest.approx(0, abs=1e-6)
    failed = dft_stage_row.original("c2", s.as_dict(), None)
    assert failed["status"] == "failed" and failed["energy_per_atom"] is None


def test_dft_hull_from_reference_runs_puts_elements_at_zero():
    level = "dft:gpaw-pbe-pw500-k3.5"
    na = Structure(Lattice.cubic(4.2), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cl = Structure(Lattice.cubic(6.0), ["Cl", "Cl"], [[0, 0, 0], [0.33, 0, 0]])

    def run(structure, energy):
        return {
            "structure": structure.as_dict(),
            "energy_per_atom": energy,
            "level_of_theory": level,
        }

    hull = build_dft_hull.original(
        "Cl-Na",
        ["Na", "Cl", "NaCl", "broken"],
        [run(na, -1.3), run(cl, -1.8), run(rocksalt(), -3.4), {"failed": True}],
        0.0,
    )
    from evaluation.hull.core import EntryHullReference

    reference = EntryHullReference.from_dict(hull)
    assert reference.level_of_theory == level and hull["skipped"] == ["broken"]
    on_hull = reference.e_above_hull(
        rocksalt().composition, -3.4, level_of_theory=level, kind="total"
    )
    assert on_hull.e_above_hull == pytest.approx(0, abs=1e-9)
    above = reference.e_above_hull(
        rocksalt().composition, -3.3, level_of_theory=level, kind="total"
    )
    assert above.e_above_hull == pytest.approx(0.1)
    assert on_hull.formation_energy_per_atom == pytest.approx(-3.4 - (-1.3 - 1.8) / 2)


def test_dft_hull_without_an_element_energy_is_an_error_not_a_wrong_hull():
    na = Structure(Lattice.cubic(4.2), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    level = "dft:gpaw-pbe-pw500-k3.5"
    row = {"structure": na.as_dict(), "energy_per_atom": -1.3, "level_of_theory": level}
    hull = build_dft_hull.original("Cl-Na", ["Na", "Cl"], [row, {"failed": True}], 0.0)
    assert "error" in hull and "Cl" in hull["error"]


def test_dft_hull_refuses_runs_at_two_levels():
    na = Structure(Lattice.cubic(4.2), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rows = [
        {"structure": na.as_dict(), "energy_per_atom": -1.3, "level_of_theory": level}
        for level in ("dft:gpaw-pbe-pw500-k3.5", "dft:gpaw-pbe-pw600-k3.5")
    ]
    assert "several levels" in build_dft_hull.original("Na", ["a", "b"], rows, 0.0)["error"]


def test_reference_structures_are_small_elements_and_compounds_of_the_system():
    chosen = dft_reference_structures("Al-Si")
    labels = [label for label, _ in chosen]
    assert labels[:2] == ["Al ref0", "Si ref0"]
    assert all(len(s) <= 8 for _, s in chosen)
    with pytest.raises(ValueError, match="no elemental polymorph of Xx|Xx"):
        dft_reference_structures("Al-Xx")


def test_engine_factory_builds_the_requested_tasks_and_refuses_unknown_engines():
    maker = tasks_maker("gpaw", ("band_gap", "relax"), {"ecut": 450})
    assert isinstance(maker, GpawTasksMaker) and maker.tasks == ("relax", "band_gap")
    assert maker.level_of_theory.startswith("dft:gpaw-pbe-pw450")
    with pytest.raises(ValueError, match="DFT engine must be"):
        tasks_maker("qe", ("relax",))
    with pytest.raises(ValueError):
        tasks_maker("gpaw", ("relax",), {"cutoff": 400})  # not a GPAW input-set field


def test_gpaw_graph_has_one_job_per_task_and_a_summary_that_survives_failures():
    from jobflow import OnMissing

    flow = GpawTasksMaker(tasks=("relax", "static", "band_gap")).make(rocksalt())
    names = [job.name for job in flow.jobs]
    assert names == ["GPAW relax", "GPAW static", "GPAW band gap", "GPAW summary"]
    assert flow.jobs[-1].config.on_missing_references == OnMissing.NONE
    elastic = GpawTasksMaker(tasks=("elastic",)).make(rocksalt())
    names = [j.name for j in elastic.jobs]
    assert names == ["GPAW elastic orientation", "GPAW elastic", "GPAW summary"]


def test_the_elastic_task_deforms_the_cell_rotated_onto_its_symmetry_axes():
    """Si built from CIF parameters (a along x) is rotated so its cubic axes are x, y, z:
    a rigid rotation, same cell and atoms, that keeps the most symmetry under Cartesian
    strains (the elastic task's cost in GPAW)."""
    import numpy as np
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from flows.dft.gpaw import aligned_with_symmetry_axes

    a = 5.43 / np.sqrt(2)
    si = Structure(Lattice.from_parameters(a, a, a, 60, 60, 60), ["Si"] * 2, [[0] * 3, [0.25] * 3])
    aligned = aligned_with_symmetry_axes(si)
    conventional = SpacegroupAnalyzer(aligned).get_conventional_standard_structure().lattice
    assert np.allclose(conventional.matrix, 5.43 * np.eye(3), atol=1e-6)
    assert aligned.lattice.abc == pytest.approx(si.lattice.abc)
    assert np.allclose(aligned.frac_coords, si.frac_coords)
    assert np.allclose(aligned.distance_matrix, si.distance_matrix)
    lattice = Lattice.from_parameters(4.1, 4.7, 5.3, 81, 97, 104)
    triclinic = Structure(lattice, ["Na", "Cl"], [[0] * 3, [0.4, 0.3, 0.6]])
    turned = aligned_with_symmetry_axes(triclinic)
    assert turned.lattice.abc == pytest.approx(triclinic.lattice.abc)
    assert turned.lattice.angles == pytest.approx(triclinic.lattice.angles)


def test_campaign_refuses_properties_without_a_dft_engine_and_a_missing_dft_code(
    monkeypatch, tmp_path
):
    from typer.testing import CliRunner

    import flows.dft.gpaw
    from flows.dft.schema import DFTUnavailable
    from pipeline.cli import app

    runner = CliRunner()
    store = ["--store", str(tmp_path / "store")]
    no_engine = runner.invoke(app, ["campaign", "run", "Al-Si", "--properties", "band_gap", *store])
    assert no_engine.exit_code == 2 and "needs a DFT engine" in no_engine.output

    def missing():
        raise DFTUnavailable("GPAW is not installed (test); run `make install-gpaw`")

    monkeypatch.setattr(flows.dft.gpaw, "check_gpaw", missing)
    no_gpaw = runner.invoke(app, ["campaign", "run", "Al-Si", "--engine", "gpaw", *store])
    assert no_gpaw.exit_code == 2
    assert no_gpaw.output.strip() == "error: GPAW is not installed (test); run `make install-gpaw`"


def test_a_gpaw_graph_survives_fireworks_serialisation_and_runs_past_failed_parents():
    """FireWorks stores every job as JSON: the input set must come back as itself, and each
    job must allow fizzled parents so a failed task reaches the summary (no stalled graph)."""
    import json

    from monty.json import MontyDecoder, jsanitize

    maker = GpawTasksMaker(tasks=("relax", "static"), settings=GpawInputSet(ecut=350))
    document = json.loads(json.dumps(jsanitize(maker.as_dict(), strict=True, allow_bson=True)))
    decoded = MontyDecoder().process_decoded(document)
    assert decoded.settings == maker.settings and tuple(decoded.tasks) == maker.tasks

    from flows.dft.schema import run_past_failures

    structure = Structure(Lattice.cubic(2.95), ["Al", "Si"], [[0] * 3, [0.5] * 3])
    run = run_past_failures(maker.make(structure))
    assert all(job.config.manager_config["_allow_fizzled_parents"] for job in run.jobs)
