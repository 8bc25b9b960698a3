"""The VASP engine: MP-consistent atomate2 graphs, inputs, summary and hull (no VASP is run)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from atomate2.vasp.jobs.base import BaseVaspMaker
from atomate2.vasp.run import run_vasp
from jobflow import Flow, JobStore, Maker, OnMissing, job, run_locally
from maggma.stores import MemoryStore
from monty.serialization import dumpfn
from pymatgen.analysis.elasticity import Deformation
from pymatgen.core import Lattice, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ConstantEnergyAdjustment
from pymatgen.io.vasp import Incar, Kpoints
from pymatgen.io.vasp.sets import MPRelaxSet, MPStaticSet

from flows.dft.schema import DFTResult, DFTUnavailable
from flows.dft.vasp import (
    MINIMAL_STENCIL,
    VASP_LEVEL,
    VaspTasksMaker,
    check_vasp,
    summarise_vasp_run,
    vasp_hull_reference,
    write_vasp_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ALL_TASKS = ("relax", "static", "band_gap", "elastic")


def fcc(a: float) -> Lattice:
    return Lattice((a / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])).tolist())


def silicon() -> Structure:
    return Structure(fcc(5.47), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])


def manganese_oxide() -> Structure:  # an oxide of a +U metal
    return Structure(fcc(4.44), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def aluminium() -> Structure:  # a metal
    return Structure(fcc(4.04), ["Al"], [[0, 0, 0]])


def bcc_iron() -> Structure:  # a magnetic metal whose even mesh MP would shift (Monkhorst-Pack)
    return Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def job_names(flow: Flow) -> list[str]:
    return [j.name for j, _ in flow.iterflow()]


# --------------------------------------------------------------------------------- the graph
def test_full_graph_is_atomate2_mp_makers_then_summary():
    flow = VaspTasksMaker(tasks=ALL_TASKS).make(silicon())
    names = job_names(flow)
    assert [f.name for f in flow.jobs] == [
        "MP GGA double relax",
        "MP GGA band structure",
        "MP GGA elastic",
        "VASP summary",
    ]
    for expected in (
        "MP GGA relax 1",
        "MP GGA relax 2",
        "MP GGA non-scf uniform",
        "MP GGA non-scf line",
        "generate_elastic_deformations",
        "run_elastic_deformations",
        "fit_elastic_tensor",
    ):
        assert expected in names
    # static and the band structure's static are the same calculation: it runs once
    assert names.count("MP GGA static") == 1
    assert names[-1] == "VASP summary"
    summary = flow.jobs[-1]
    assert summary.config.on_missing_references == OnMissing.NONE  # failures reach it
    assert set(summary.function_kwargs) == set(ALL_TASKS)
    assert flow.output.uuid == summary.uuid


def test_relax_only_graph_is_the_double_relax_and_the_summary():
    flow = VaspTasksMaker(tasks=("relax",)).make(silicon())
    assert job_names(flow) == ["MP GGA relax 1", "MP GGA relax 2", "VASP summary"]


def test_property_tasks_start_from_the_relaxed_structure_or_the_input():
    relaxed = VaspTasksMaker(tasks=("relax", "elastic")).make(silicon())
    generate = next(j for j, _ in relaxed.iterflow() if j.name == "generate_elastic_deformations")
    relax2 = next(j for j, _ in relaxed.iterflow() if j.name == "MP GGA relax 2")
    assert generate.function_args[0].uuid == relax2.uuid  # an OutputReference to relax 2
    alone = VaspTasksMaker(tasks=("band_gap",)).make(silicon())
    static = next(j for j, _ in alone.iterflow() if j.name == "MP GGA static")
    assert isinstance(static.function_args[0], Structure)


def test_unknown_tasks_raise():
    with pytest.raises(ValueError, match="phonons"):
        VaspTasksMaker(tasks=("relax", "phonons")).make(silicon())
    with pytest.raises(ValueError, match="unknown DFT task"):
        write_vasp_inputs(silicon(), "phonons", "unused")


def test_every_vasp_job_keeps_custodians_default_handlers():
    assert inspect.signature(run_vasp).parameters["handlers"].default  # atomate2's handler list
    flow = VaspTasksMaker(tasks=ALL_TASKS).make(silicon())
    makers = [j.function.__self__ for j, _ in flow.iterflow() if hasattr(j.function, "__self__")]
    vasp_makers = [m for m in makers if isinstance(m, BaseVaspMaker)]
    assert len(vasp_makers) == 5  # relax 1, relax 2, static, non-scf uniform and line
    assert all("handlers" not in m.run_vasp_kwargs for m in vasp_makers)
    elastic_relax = VaspTasksMaker().elastic_maker.elastic_relax_maker
    assert "handlers" not in elastic_relax.run_vasp_kwargs


# -------------------------------------------------------------------------------- the inputs
#: The INCAR keys that fix MP's Hamiltonian, convergence and task.
MP_INCAR_KEYS = ["ENCUT", "EDIFF", "ISPIN", "MAGMOM", "LDAU", "LDAUU", "LDAUL", "ISMEAR", "SIGMA"]
MP_INCAR_KEYS += ["IBRION", "ISIF", "NSW", "LREAL", "PREC", "LASPH", "ALGO"]


def _written(path: Path) -> tuple[Incar, Kpoints, list[str]]:
    potcars = (path / "POTCAR.spec").read_text().split()
    return Incar.from_file(path / "INCAR"), Kpoints.from_file(path / "KPOINTS"), potcars


@pytest.mark.parametrize("make_structure", [silicon, manganese_oxide, aluminium, bcc_iron])
@pytest.mark.parametrize(
    ("task", "reference_set"), [("relax", MPRelaxSet), ("static", MPStaticSet)]
)
def test_written_inputs_are_pymatgens_mp_sets(tmp_path, make_structure, task, reference_set):
    structure = make_structure()
    ours = _written(write_vasp_inputs(structure, task, tmp_path / "ours"))
    reference_set(structure=structure).write_input(tmp_path / "mp", potcar_spec=True)
    mp = _written(tmp_path / "mp")
    for key in MP_INCAR_KEYS:
        assert ours[0].get(key) == mp[0].get(key), key
    assert ours[2] == mp[2]  # POTCAR symbols
    assert ours[1].kpts == mp[1].kpts  # same k-point density and mesh
    # Documented difference: atomate2's MP makers set force_gamma=True, so the mesh is always
    # Γ-centred, where pymatgen's MP sets shift even meshes of non-hexagonal, non-fcc cells.
    assert ours[1].style == Kpoints.supported_modes.Gamma
    if make_structure is bcc_iron:
        assert mp[1].style == Kpoints.supported_modes.Monkhorst


def test_mp_settings_as_numbers(tmp_path):
    relax, _, potcars = _written(write_vasp_inputs(manganese_oxide(), "relax", tmp_path / "r"))
    assert relax["ENCUT"] == 520 and relax["ISPIN"] == 2 and relax["PREC"] == "Accurate"
    assert relax["EDIFF"] == pytest.approx(5e-5 * 2)  # EDIFF_PER_ATOM
    assert (relax["IBRION"], relax["ISIF"], relax["NSW"]) == (2, 3, 99)
    assert relax["LDAU"] is True and relax["LDAUU"] == [3.9, 0] and relax["LDAUL"] == [2, 0]
    assert relax["MAGMOM"] == [5, 0.6] and relax["LREAL"] == "Auto"
    assert potcars == ["Mn_pv", "O"]
    static, _, _ = _written(write_vasp_inputs(manganese_oxide(), "static", tmp_path / "s"))
    assert static["NSW"] == 0 and static["LREAL"] is False and static["ISMEAR"] == -5
    silicon_relax, _, _ = _written(write_vasp_inputs(silicon(), "relax", tmp_path / "si"))
    assert "LDAU" not in silicon_relax  # no +U outside oxides/fluorides of U metals


def test_band_gap_and_elastic_stay_on_mp_pbe(tmp_path):
    bands, _, potcars = _written(write_vasp_inputs(manganese_oxide(), "band_gap", tmp_path / "b"))
    assert bands["NSW"] == 0 and bands["LDAUU"] == [3.9, 0] and potcars == ["Mn_pv", "O"]
    elastic, kpoints, potcars = _written(
        write_vasp_inputs(manganese_oxide(), "elastic", tmp_path / "e")
    )
    # atomate2's tight elastic relaxation, but on MP's Hamiltonian: PBE (no GGA=PS), +U, MP POTCARs
    assert (elastic["ENCUT"], elastic["EDIFF"], elastic["ISIF"]) == (700, 1e-7, 2)
    assert "GGA" not in elastic and elastic["LDAUU"] == [3.9, 0] and potcars == ["Mn_pv", "O"]
    strained = Structure.from_file(tmp_path / "e" / "POSCAR")
    assert not np.allclose(strained.lattice.matrix, manganese_oxide().lattice.matrix)
    assert np.prod(kpoints.kpts[0]) * len(strained) >= 7000 * 0.9  # grid_density 7000


# ------------------------------------------------------------------------------ elastic stencil
def _deformations(maker: VaspTasksMaker) -> list:
    flow = maker.make(silicon())
    generate = next(j for j, _ in flow.iterflow() if j.name == "generate_elastic_deformations")
    assert generate.function_kwargs["strain_magnitudes"] == MINIMAL_STENCIL == [-0.01, 0.01]
    return generate.function(*generate.function_args, **generate.function_kwargs)


def test_elastic_stencil_is_minimal_and_symmetry_reduced():
    maker = VaspTasksMaker(tasks=("elastic",))
    assert maker.elastic_maker.bulk_relax_maker is None  # the structure arrives relaxed
    assert len(_deformations(maker)) == 3  # cubic Si: +1 %, -1 % normal, one shear
    maker.elastic_maker.sym_reduce = False
    deformations = _deformations(maker)
    assert len(deformations) == 12  # ±1 % on each of the six strain states
    strains = np.array([Deformation(d).green_lagrange_strain.voigt for d in deformations])
    assert np.count_nonzero(np.abs(strains) > 1e-9, axis=1).tolist() == [1] * 12
    # Voigt shear strains are engineering strains: 2 x the 1 % tensor strain
    assert sorted(np.round(np.abs(strains).max(axis=1), 6)) == [0.01] * 6 + [0.02] * 6
    assert np.round(strains.sum(axis=0), 9).tolist() == [0.0] * 6  # each state has + and -


# ----------------------------------------------------------------------------------- check_vasp
def test_check_vasp_says_in_one_line_how_to_configure(monkeypatch):
    from atomate2 import SETTINGS

    monkeypatch.setattr(SETTINGS, "VASP_CMD", "vasp_std_that_is_not_installed")
    with pytest.raises(DFTUnavailable) as error:
        check_vasp()
    message = str(error.value)
    assert "\n" not in message and "VASP not found" in message
    assert "VASP_CMD" in message and "ATOMATE2_VASP_CMD" in message


def test_check_vasp_wants_potcars_only_when_asked(monkeypatch, tmp_path):
    from atomate2 import SETTINGS
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    monkeypatch.setattr(SETTINGS, "VASP_CMD", sys.executable)  # any executable on the path
    monkeypatch.setitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", str(tmp_path / "missing"))
    with pytest.raises(DFTUnavailable, match="PMG_VASP_PSP_DIR") as error:
        check_vasp()
    assert "\n" not in str(error.value)
    check_vasp(potcars=False)
    monkeypatch.setitem(PMG_SETTINGS, "PMG_VASP_PSP_DIR", str(tmp_path))
    check_vasp()


# ------------------------------------------------------------------------------------ summary
MNO_PARAMETERS = {
    "run_type": "GGA+U",
    "is_hubbard": True,
    "hubbards": {"Mn": 3.9, "O": 0.0},
    "potcar_spec": [
        {"titel": "PAW_PBE Mn_pv 02Aug2007", "hash": None},
        {"titel": "PAW_PBE O 08Apr2002", "hash": None},
    ],
}


def task_doc(structure: Structure, seconds: float, **extra) -> dict:
    """The fields of an atomate2 TaskDoc the summary reads, as the store hands them back."""
    return {
        "state": "successful",
        "structure": structure.as_dict(),
        "run_stats": {"overall": {"elapsed_time": seconds}},
        **extra,
    }


def fake_outputs() -> dict:
    relaxed = manganese_oxide()
    relaxed.scale_lattice(relaxed.volume * 1.02)
    entry = ComputedEntry(relaxed.composition, -17.0, parameters=MNO_PARAMETERS)
    static = task_doc(relaxed, 30.0, entry=entry.as_dict())

    def non_scf(gap: float, direct: bool) -> dict:
        output = {
            "output": {"bandgap": gap},
            "calcs_reversed": [{"output": {"is_gap_direct": direct}}],
        }
        return task_doc(relaxed, 20.0, **output)

    tensor = (np.eye(6) * 100).tolist()
    return {
        "relax": [task_doc(manganese_oxide(), 100.0), task_doc(relaxed, 50.0)],
        "static": static,
        "band_gap": {"static": static, "uniform": non_scf(1.3, False), "line": non_scf(1.1, True)},
        "elastic": {
            "elastic_tensor": {"ieee_format": tensor},
            "derived_properties": {"k_vrh": 150.0, "g_vrh": 80.0},
            "fitting_data": {"deformations": [np.eye(3).tolist()] * 12},
        },
    }


def summarise(tasks=ALL_TASKS, **outputs) -> DFTResult:
    result = summarise_vasp_run.original(manganese_oxide(), list(tasks), {"x": 1}, **outputs)
    return DFTResult.model_validate(result)


def test_summary_of_a_finished_run_is_an_mp2020_dft_result():
    outputs = fake_outputs()
    result = summarise(**outputs)
    assert (result.engine, result.level_of_theory, result.status) == ("vasp", VASP_LEVEL, "ok")
    expected = MaterialsProject2020Compatibility().process_entry(
        ComputedEntry.from_dict(outputs["static"]["entry"])
    )
    assert result.uncorrected_energy_per_atom == pytest.approx(-17.0 / 2)
    assert result.energy_per_atom == pytest.approx(expected.energy_per_atom)
    assert result.energy_per_atom < result.uncorrected_energy_per_atom  # oxide and U corrections
    assert Structure.from_dict(result.structure).volume == pytest.approx(
        manganese_oxide().volume * 1.02
    )
    assert (result.band_gap, result.is_gap_direct) == (1.1, True)  # the smaller of the two
    assert result.elastic.k_vrh == 150.0 and result.elastic.g_vrh == 80.0
    assert result.elastic.elastic_tensor[0][0] == 100.0 and result.elastic.n_deformations == 12
    assert result.tasks["relax"].seconds == 150.0 and result.tasks["band_gap"].seconds == 70.0
    assert all(t.status == "ok" for t in result.tasks.values())


def test_summary_of_a_failed_relaxation_names_it():
    result = summarise(relax=[None, None], static=None, band_gap={"static": None}, elastic=None)
    assert result.status == "failed" and result.energy_per_atom is None
    assert result.reason.startswith("relax did not finish")
    assert result.tasks["relax"].status == "failed"
    assert result.tasks["static"].reason == "static not run: relax failed"


def test_summary_of_a_failed_property_is_partial():
    outputs = fake_outputs()
    outputs["elastic"] = None
    result = summarise(**outputs)
    assert result.status == "partial" and "elastic" in result.reason
    assert result.energy_per_atom is not None and result.elastic is None


def test_summary_records_an_mp2020_rejection():
    outputs = fake_outputs()
    entry = ComputedEntry("MnO", -17.0, parameters={**MNO_PARAMETERS, "run_type": "R2SCAN"})
    outputs["static"]["entry"] = entry.as_dict()
    result = summarise(tasks=("relax", "static"), relax=outputs["relax"], static=outputs["static"])
    assert result.status == "failed" and result.energy_per_atom is None
    assert result.uncorrected_energy_per_atom == pytest.approx(-8.5)
    assert "MaterialsProject2020Compatibility rejected" in result.reason


def test_summary_never_passes_a_relaxation_energy_off_as_the_static_one():
    outputs = fake_outputs()
    result = summarise(tasks=("relax", "static"), relax=outputs["relax"], static=None)
    assert result.status == "failed" and result.energy_per_atom is None
    assert result.reason.startswith("static did not finish")
    outputs["relax"][-1]["entry"] = outputs["static"]["entry"]
    relax_only = summarise(tasks=("relax",), relax=outputs["relax"])  # no static asked for
    assert relax_only.status == "ok" and relax_only.uncorrected_energy_per_atom == -8.5


def test_summary_reads_real_atomate2_documents():
    from atomate2.common.schemas.elastic import (
        DerivedProperties,
        ElasticDocument,
        ElasticTensorDocument,
    )
    from emmet.core.tasks import OutputDoc, TaskDoc
    from emmet.core.vasp.calculation import RunStatistics

    structure = manganese_oxide()
    doc = TaskDoc(
        state="successful",
        structure=structure,
        entry=ComputedEntry(structure.composition, -17.0, parameters=MNO_PARAMETERS),
        run_stats={"overall": RunStatistics(elapsed_time=5.0)},
        output=OutputDoc(structure=structure, bandgap=0.9),
        calcs_reversed=[],
    )
    elastic = ElasticDocument(
        elastic_tensor=ElasticTensorDocument(ieee_format=np.eye(6).tolist()),
        derived_properties=DerivedProperties(k_vrh=1.0, g_vrh=2.0),
    )
    band_gap = {"static": doc, "uniform": doc, "line": doc}
    result = summarise(relax=[doc, doc], static=doc, band_gap=band_gap, elastic=elastic)
    assert result.status == "ok" and result.band_gap == 0.9 and result.is_gap_direct is None
    assert result.tasks["relax"].seconds == 10.0 and result.elastic.k_vrh == 1.0
    assert result.energy_per_atom < result.uncorrected_energy_per_atom == -8.5


@dataclass
class CrashingRelaxMaker(Maker):
    name: str = "crashing relax"

    @job
    def make(self, structure: Structure) -> None:
        raise RuntimeError("VASP crashed")


def test_a_crashed_vasp_job_reaches_the_summary_through_jobflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = VaspTasksMaker(tasks=("relax",), relax_maker=CrashingRelaxMaker()).make(silicon())
    responses = run_locally(flow, store=JobStore(MemoryStore()), log=False, ensure_success=False)
    result = DFTResult.model_validate(responses[flow.jobs[-1].uuid][1].output)
    assert result.status == "failed" and result.reason.startswith("relax did not finish")


# --------------------------------------------------------------------------------- hull
def li_o_entries(with_oxygen: bool = True) -> list[ComputedEntry]:
    def entry(formula: str, energy: float, entry_id: str, **kwargs) -> ComputedEntry:
        symbols = {"Li": "Li_sv", "O": "O", "Fe": "Fe_pv"}
        spec = [
            {"titel": f"PAW_PBE {symbols[el]} 2000", "hash": None}
            for el in sorted(ComputedEntry(formula, 0).composition.as_dict())
        ]
        parameters = {"run_type": "GGA", "is_hubbard": False, "hubbards": {}, "potcar_spec": spec}
        return ComputedEntry(formula, energy, parameters=parameters, entry_id=entry_id, **kwargs)

    entries = [
        entry("Li", -1.9, "li"),
        entry("Li", -1.8, "li-hcp"),  # 0.1 eV/atom above the ground state
        entry("Li2O", -14.3, "li2o"),  # uncorrected: MP2020 adds the oxide correction
        entry(  # already MP2020-corrected: kept as it is
            "Li2O2",
            -19.0,
            "li2o2",
            energy_adjustments=[ConstantEnergyAdjustment(-0.5, name="MP2020 anion correction")],
        ),
        entry("Fe", -8.3, "fe"),  # outside Li-O
    ]
    if with_oxygen:
        entries.append(entry("O2", -9.9, "o2"))
    return entries


def test_vasp_hull_reference_puts_mp2020_entries_on_one_hull(tmp_path):
    path = tmp_path / "entries.json.gz"
    dumpfn([e.as_dict() for e in li_o_entries()], path)
    hull = vasp_hull_reference("Li-O", path)
    assert hull.level_of_theory == VASP_LEVEL and len(hull) == 5  # Fe left out
    li2o = MaterialsProject2020Compatibility().process_entry(li_o_entries()[2])
    for formula, energy in (("Li", -1.9), ("O2", -9.9 / 2), ("Li2O", li2o.energy_per_atom)):
        above = hull.e_above_hull(formula, energy, level_of_theory=VASP_LEVEL, kind="total")
        assert above.e_above_hull == pytest.approx(0, abs=1e-9), formula
    li2o2 = hull.e_above_hull("Li2O2", -19.5 / 4, level_of_theory=VASP_LEVEL, kind="total")
    assert li2o2.e_above_hull > 0.05
    hcp = hull.e_above_hull("Li", -1.8, level_of_theory=VASP_LEVEL, kind="total")
    assert hcp.e_above_hull == pytest.approx(0.1)
    totals = {name: total for _, total, name in hull.to_dict()["entries"]}
    assert totals["li2o"] == pytest.approx(li2o.energy) and totals["li2o"] < -14.3
    assert totals["li2o2"] == pytest.approx(-19.5)


def test_vasp_hull_reference_needs_every_elemental_entry(tmp_path):
    path = tmp_path / "entries.json"
    dumpfn([e.as_dict() for e in li_o_entries(with_oxygen=False)], path)
    with pytest.raises(ValueError, match="no elemental entry for O"):
        vasp_hull_reference("Li-O", path)
