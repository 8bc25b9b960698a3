"""VASP through atomate2's Materials Project makers: relax, static, band gap and elastic.

The MatterGen protocol (paper, App. C.2): PAW-PBE(+U) with MP's POTCARs and ``MPRelaxSet``
settings via atomate2, so every energy takes the ``MaterialsProject2020Compatibility``
corrections and shares a hull with MP2020-compatible reference entries
(:func:`vasp_hull_reference`)::

    MP GGA double relax ─┬→ MP GGA static ─────────────────────────┐
                         ├→ band structure: static → non-SCF uniform, line ├→ VASP summary
                         └→ elastic: ±1 % deformations → fit ──────────────┘

When both ``static`` and ``band_gap`` are asked for, the band structure's static (the same
maker on the same structure) is the static. Building the graph and writing inputs
(POTCAR.spec) need neither VASP nor POTCARs; :func:`check_vasp` is for whoever runs it.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomate2.common.jobs.elastic import generate_elastic_deformations
from atomate2.vasp.files import write_vasp_input_set
from atomate2.vasp.flows.core import BandStructureMaker
from atomate2.vasp.flows.elastic import ElasticMaker
from atomate2.vasp.flows.mp import MPGGADoubleRelaxMaker
from atomate2.vasp.jobs.core import NonSCFMaker
from atomate2.vasp.jobs.elastic import ElasticRelaxMaker
from atomate2.vasp.jobs.mp import MPGGAStaticMaker
from atomate2.vasp.sets.core import StaticSetGenerator
from jobflow import Flow, Job, Maker, OnMissing, job
from pymatgen.core import Structure
from pymatgen.entries.compatibility import CompatibilityError, MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.io.vasp.sets import MPNonSCFSet, MPRelaxSet
from pymatgen.transformations.standard_transformations import DeformStructureTransformation

from evaluation.hull.core import MP2020_CORRECTION, EntryHullReference, chemsys_elements
from evaluation.hull.mp_entries import correction_scheme_of
from flows.dft.schema import DFTResult, DFTUnavailable, TaskOutcome, parse_tasks
from flows.dft.task_documents import elastic_result, field_of, structure_of

logger = logging.getLogger(__name__)

ENGINE = "vasp"
#: MP-compatible PBE(+U), MP2020-corrected. The correction is part of the tag, so hull
#: references of this level carry correction "none" and DFTResult queries match them as is.
VASP_LEVEL = "dft:vasp-pbe-mp2020"
#: The paper's "minimal" elastic stencil: ±1 % on each of the six independent strain states.
MINIMAL_STENCIL = [-0.01, 0.01]


def check_vasp(potcars: bool = True) -> None:
    """Raise :class:`DFTUnavailable` (one line) when VASP, or its POTCARs, are not set up.

    Call it before running a VASP graph, never when building one: graphs and inputs need
    neither. ``potcars=False`` checks only the executable(s) of atomate2's ``VASP_CMD``.
    """
    from atomate2 import SETTINGS
    from pymatgen.core import SETTINGS as PMG_SETTINGS

    command = os.path.expandvars(SETTINGS.VASP_CMD or "")
    words = shlex.split(command)
    # "mpirun -n 16 vasp_std": both the launcher and the VASP binary must resolve
    missing = [w for w in dict.fromkeys(words[:1] + words[-1:]) if shutil.which(w) is None]
    if not words or missing:
        raise DFTUnavailable(
            f"VASP not found: atomate2's VASP_CMD is {command!r} and "
            f"{(missing or ['(empty)'])[0]!r} is not on PATH; install VASP and set VASP_CMD in "
            "~/.atomate2.yaml or the ATOMATE2_VASP_CMD environment variable "
            "(e.g. 'mpirun -n 16 vasp_std')"
        )
    psp_dir = PMG_SETTINGS.get("PMG_VASP_PSP_DIR")
    if potcars and not (psp_dir and Path(psp_dir).is_dir()):
        raise DFTUnavailable(
            f"VASP POTCARs not configured (PMG_VASP_PSP_DIR={psp_dir!r}): point pymatgen's "
            "PMG_VASP_PSP_DIR at your POTCAR library (`pmg config --add PMG_VASP_PSP_DIR <dir>` "
            "or the environment variable)"
        )


# --- makers: atomate2's MP flavours, kept on MPRelaxSet's Hamiltonian throughout --------------
def _mp_static_maker() -> MPGGAStaticMaker:
    # as atomate2's MPGGADoubleRelaxStaticMaker: start from the relaxation's WAVECAR and CHGCAR
    return MPGGAStaticMaker(copy_vasp_kwargs={"additional_vasp_files": ("WAVECAR", "CHGCAR")})


def _mp_band_structure_maker() -> BandStructureMaker:
    # atomate2's default static/non-SCF sets are PBEsol on PBE_54 POTCARs; the non-SCF steps
    # read the static's CHGCAR, so both must be MP's PBE(+U) to give the MP-level gap.
    # MPNonSCFSet inherits the static's INCAR; Γ-centred so the uniform mesh contains Γ.
    return BandStructureMaker(
        name="MP GGA band structure",
        static_maker=_mp_static_maker(),
        bs_maker=NonSCFMaker(
            name="MP GGA non-scf", input_set_generator=MPNonSCFSet(force_gamma=True)
        ),
    )


def _mp_elastic_maker() -> ElasticMaker:
    # atomate2's elastic relaxation settings (ENCUT 700, EDIFF 1e-7, EDIFFG -0.001, ISIF 2,
    # 7000 k-points per reciprocal atom) on MPRelaxSet's config instead of atomate2's PBEsol
    # base, so the moduli come from the same PBE(+U) Hamiltonian as the energies.
    default = ElasticRelaxMaker().input_set_generator
    relax = ElasticRelaxMaker(
        name="MP GGA elastic relax",
        input_set_generator=StaticSetGenerator(
            config_dict=MPRelaxSet.CONFIG,
            user_incar_settings=dict(default.user_incar_settings),
            user_kpoints_settings=dict(default.user_kpoints_settings),
        ),
    )
    return ElasticMaker(
        name="MP GGA elastic",
        # The structure comes relaxed. Each strain state has the symmetric pair ±1 %, whose
        # central difference gives the zero-strain stress weight 0: a residual stress (e.g. the
        # Pulay stress of ENCUT 700 at a 520 eV geometry) does not bias the fit, so atomate2's
        # tight bulk re-relaxation is not needed.
        bulk_relax_maker=None,
        elastic_relax_maker=relax,
        # with two points per strain state, one lost deformation would turn the fit into a
        # one-sided difference against an assumed zero stress: fail instead
        max_failed_deformations=0,
        generate_elastic_deformations_kwargs={"strain_magnitudes": list(MINIMAL_STENCIL)},
    )


def _describe(maker: Any) -> str:
    """``Maker (InputSet, ...)``: a maker and the input sets of the VASP jobs it makes."""
    sets: list[str] = []
    for part in (maker, *vars(maker).values()):
        generator = getattr(part, "input_set_generator", None)
        if generator is not None and type(generator).__name__ not in sets:
            sets.append(type(generator).__name__)
    return f"{type(maker).__name__} ({', '.join(sets)})"


@dataclass
class VaspTasksMaker(Maker):
    """Relax, static, band gap and elastic of one structure with VASP at MP settings, as asked.

    The relaxation is atomate2's ``MPGGADoubleRelaxMaker`` and the static its
    ``MPGGAStaticMaker``: jobs on pymatgen's own ``MPRelaxSet``/``MPStaticSet`` (ENCUT 520,
    EDIFF per atom, MP's U values and POTCARs, ISPIN 2 with MP's MAGMOMs), differing only in
    Γ-centred k-meshes (``force_gamma``) and ``inherit_incar=False``. The core
    ``DoubleRelaxMaker``/``StaticMaker`` would need those sets rebuilt by hand to match.
    The band gap is atomate2's ``BandStructureMaker`` (MP static, then ``MPNonSCFSet``
    uniform and line runs); elastic is atomate2's VASP ``ElasticMaker`` with the minimal
    stencil on MP settings. Every job runs VASP through custodian with atomate2's default
    error handlers (``run_vasp_kwargs`` left empty).

    Attributes
    ----------
    tasks
        Any of ``relax``, ``static``, ``band_gap``, ``elastic`` (validated by ``parse_tasks``).
    relax_maker, static_maker, band_structure_maker, elastic_maker
        The atomate2 makers of each task.
    """

    name: str = "vasp"
    tasks: tuple[str, ...] = ("relax", "static")
    relax_maker: Maker = field(default_factory=MPGGADoubleRelaxMaker)
    static_maker: Maker = field(default_factory=_mp_static_maker)
    band_structure_maker: BandStructureMaker = field(default_factory=_mp_band_structure_maker)
    elastic_maker: ElasticMaker = field(default_factory=_mp_elastic_maker)

    @property
    def level_of_theory(self) -> str:
        return VASP_LEVEL

    def make(self, structure: Structure) -> Flow:
        """The graph of the requested tasks; its output is the summary's DFTResult dict."""
        tasks = parse_tasks(self.tasks)
        jobs: list[Job | Flow] = []
        outputs: dict[str, Any] = {}
        current: Any = structure
        prev_dir: Any = None
        if "relax" in tasks:
            relax = self.relax_maker.make(structure)
            jobs.append(relax)
            parts = relax.jobs if isinstance(relax, Flow) else [relax]
            outputs["relax"] = [j.output for j in parts]  # both relaxations, for their timings
            current, prev_dir = relax.output.structure, relax.output.dir_name
        static: Any = None
        if "band_gap" in tasks:
            bands = self.band_structure_maker.make(current, prev_dir=prev_dir)
            jobs.append(bands)
            first = bands.jobs[0].output
            runs = {k: v for k, v in bands.output.items() if k in ("uniform", "line")}
            outputs["band_gap"] = {"static": first, **runs}
            if self.band_structure_maker.static_maker == self.static_maker:
                static = first  # the same calculation: run it once
        if "static" in tasks:
            if static is None:
                static_job = self.static_maker.make(current, prev_dir=prev_dir)
                jobs.append(static_job)
                static = static_job.output
            outputs["static"] = static
        if "elastic" in tasks:
            elastic = self.elastic_maker.make(current, prev_dir=prev_dir)
            jobs.append(elastic)
            outputs["elastic"] = elastic.output
        makers = {
            "relax": self.relax_maker,
            "static": self.static_maker,
            "band_gap": self.band_structure_maker,
            "elastic": self.elastic_maker,
        }
        settings: dict[str, Any] = {t: _describe(makers[t]) for t in tasks}
        settings["correction"] = "MaterialsProject2020Compatibility"
        if "elastic" in tasks:
            settings["elastic_stencil"] = self.elastic_maker.generate_elastic_deformations_kwargs
        summary = summarise_vasp_run(structure, list(tasks), settings, **outputs)
        summary.name = "VASP summary"
        # a failed VASP job must reach the summary as None, not stop it
        summary.config.on_missing_references = OnMissing.NONE
        jobs.append(summary)
        return Flow(jobs, output=summary.output, name=f"{self.name} {structure.formula}")


# --- the summary: atomate2 task documents -> DFTResult -----------------------------------------
def _outcome(task: str, documents: list[Any]) -> TaskOutcome:
    if not documents or any(d is None for d in documents):
        reason = f"{task} did not finish: a VASP job of it failed (see the job's log)"
        return TaskOutcome(status="failed", reason=reason)
    states = [str(getattr(s, "value", s)) for s in (field_of(d, "state") for d in documents)]
    bad = [s for s in states if s not in ("successful", "None")]
    if bad:
        return TaskOutcome(status="failed", reason=f"{task}: VASP task state {bad[0]!r}")
    times = [field_of(d, "run_stats", "overall", "elapsed_time") for d in documents]
    known = [float(t) for t in times if t is not None]
    return TaskOutcome(status="ok", seconds=sum(known) if known else None)


def mp2020_energy(entry: Any) -> tuple[float | None, float | None, str]:
    """``(corrected, uncorrected, problem)`` eV/atom of a task document's ComputedEntry."""
    if entry is None:
        return None, None, "no ComputedEntry in the task document"
    if isinstance(entry, dict):
        entry = ComputedEntry.from_dict(entry)
    raw = float(entry.uncorrected_energy_per_atom)
    try:
        processed = MaterialsProject2020Compatibility().process_entries(
            [entry], inplace=False, on_error="raise"
        )
    except (CompatibilityError, KeyError, ValueError) as error:
        return None, raw, f"MaterialsProject2020Compatibility rejected the entry: {error}"
    return float(processed[0].energy_per_atom), raw, ""


def _band_gap(documents: list[Any]) -> tuple[float | None, bool | None]:
    # Both meshes sample one Hamiltonian; the smaller gap is the closer bound on the true one.
    found = [
        (float(gap), field_of(d, "calcs_reversed", 0, "output", "is_gap_direct"))
        for d in documents
        if (gap := field_of(d, "output", "bandgap")) is not None
    ]
    if not found:
        return None, None
    gap, direct = min(found, key=lambda pair: pair[0])
    return gap, None if direct is None else bool(direct)


@job
def summarise_vasp_run(
    structure: Structure,
    tasks: list[str],
    settings: dict[str, Any],
    relax: list[Any] | None = None,
    static: Any = None,
    band_gap: dict[str, Any] | None = None,
    elastic: Any = None,
) -> dict[str, Any]:
    """The run's :class:`DFTResult` (as a dict) from atomate2 task documents.

    A task whose job failed arrives as ``None`` (``OnMissing.NONE``); ``relax`` holds the
    task documents of both relaxations, ``band_gap`` those of the static and non-SCF runs.
    """
    documents = {
        "relax": list(relax or [None]),
        "static": [static],
        "band_gap": list((band_gap or {"static": None}).values()),
        "elastic": [elastic],
    }
    outcomes = {t: _outcome(t, documents[t]) for t in tasks}
    relax_failed = "relax" in tasks and outcomes["relax"].status == "failed"
    for task, outcome in outcomes.items():
        if task != "relax" and outcome.status == "failed" and relax_failed:
            outcome.reason = f"{task} not run: relax failed"
    # the static energy at the relaxed geometry (the band structure's static is one too);
    # the relaxation's last energy only when no static was asked for
    if "static" in tasks or "band_gap" in tasks:
        energy_doc = static if "static" in tasks else field_of(band_gap, "static")
    else:
        energy_doc = documents["relax"][-1]
    energy, raw, problem = (None, None, "")
    if energy_doc is not None:
        energy, raw, problem = mp2020_energy(field_of(energy_doc, "entry"))
    final = structure_of(documents["relax"][-1]) if "relax" in tasks else structure
    failed = [t for t, o in outcomes.items() if o.status != "ok"]
    reasons = [outcomes[t].reason for t in failed] + ([problem] if problem else [])
    wants_energy = bool({"relax", "static", "band_gap"} & set(tasks))
    if len(failed) == len(tasks) or (wants_energy and (energy is None or final is None)):
        status = "failed"
    else:
        status = "partial" if failed else "ok"
    gap, direct = (None, None)
    if "band_gap" in tasks and outcomes["band_gap"].status == "ok":
        gap, direct = _band_gap([band_gap.get("uniform"), band_gap.get("line")])
    elastic_values = elastic_result(elastic) if "elastic" not in failed else None
    return DFTResult(
        engine=ENGINE,
        level_of_theory=VASP_LEVEL,
        status=status,
        reason="; ".join(reasons),
        structure=final.as_dict() if final is not None else None,
        energy_per_atom=energy,
        uncorrected_energy_per_atom=raw,
        band_gap=gap,
        is_gap_direct=direct,
        elastic=elastic_values,
        tasks=outcomes,
        settings=settings,
    ).model_dump()


# --- inputs for inspection ---------------------------------------------------------------------
def write_vasp_inputs(
    structure: Structure,
    task: str,
    directory: str | Path,
    maker: VaspTasksMaker | None = None,
) -> Path:
    """Write the inputs the first VASP job of ``task`` would write, with POTCAR.spec.

    ``relax``: the first MP GGA relaxation; ``static``: the MP static; ``band_gap``: the band
    structure's static; ``elastic``: the first deformation's relaxation (of ``structure``
    strained by the first deformation of the stencil). No VASP or POTCAR is needed.
    """
    (name,) = parse_tasks([task])  # one known task name, or ValueError
    maker = maker or VaspTasksMaker()
    first: Any = {
        "relax": getattr(maker.relax_maker, "relax_maker1", None)
        or getattr(maker.relax_maker, "relax_maker2", maker.relax_maker),
        "static": maker.static_maker,
        "band_gap": maker.band_structure_maker.static_maker,
        "elastic": maker.elastic_maker.elastic_relax_maker,
    }[name]
    if name == "elastic":
        elastic = maker.elastic_maker
        deformations = generate_elastic_deformations.original(
            structure,
            order=elastic.order,
            symprec=elastic.symprec,
            sym_reduce=elastic.sym_reduce,
            **elastic.generate_elastic_deformations_kwargs,
        )
        structure = DeformStructureTransformation(deformations[0]).apply_transformation(structure)
    # clean_prev=False: atomate2 would delete INCAR/POSCAR/... from the *current* directory
    write_vasp_input_set(
        structure,
        copy.deepcopy(first.input_set_generator),
        directory=directory,
        potcar_spec=True,
        clean_prev=False,
    )
    return Path(directory)


# --- hull references at VASP_LEVEL -------------------------------------------------------------
def _read_entry_dicts(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as handle:
        data = json.load(handle)
    items = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise ValueError(f"{path}: expected a JSON list of ComputedEntry dicts")
    return items


def _symbols(entry_dict: dict[str, Any]) -> frozenset[str]:
    # from the raw dict: decoding a million-entry file only to drop most of it is slow
    composition = entry_dict.get("composition") or {}
    return frozenset(re.match(r"[A-Z][a-z]?", str(key)).group() for key in composition)


def vasp_hull_reference(
    chemsys: str, entries_path: str | Path, *, check_potcar: bool = True
) -> EntryHullReference:
    """A hull of user-supplied MP2020-compatible VASP entries at :data:`VASP_LEVEL`.

    Parameters
    ----------
    chemsys
        ``"Li-Fe-O"``: entries of this system and its subsystems are kept.
    entries_path
        JSON (or ``.json.gz``) list of ComputedEntry/ComputedStructureEntry dicts (e.g.
        Alex-MP-ICSD). Entries already carrying MP2020 adjustments are kept as they are; the
        rest go through ``MaterialsProject2020Compatibility`` and are dropped if it rejects them.

    Raises
    ------
    ValueError
        When an element of ``chemsys`` has no (accepted) elemental entry.
    """
    elements = chemsys_elements(chemsys)
    path = Path(entries_path)
    entries = [
        (ComputedStructureEntry if "structure" in d else ComputedEntry).from_dict(d)
        for d in _read_entry_dicts(path)
        if _symbols(d) <= elements
    ]
    compatibility = MaterialsProject2020Compatibility(check_potcar=check_potcar)
    kept: list[ComputedEntry] = []
    rejected: list[str] = []
    for entry in entries:
        if correction_scheme_of(entry) == MP2020_CORRECTION:
            kept.append(entry)
            continue
        try:
            kept.extend(compatibility.process_entries([entry], inplace=False, on_error="raise"))
        except (CompatibilityError, KeyError, ValueError) as error:
            rejected.append(f"{entry.entry_id or entry.composition.reduced_formula}: {error}")
    if rejected:
        logger.warning(
            "MP2020 rejected %d of %d entries in %s (first: %s)",
            *(len(rejected), len(entries), path, rejected[0]),
        )
    mu: dict[str, float] = {}
    for entry in kept:
        if len(entry.composition.elements) == 1:
            symbol = entry.composition.elements[0].symbol
            mu[symbol] = min(mu.get(symbol, float("inf")), entry.energy_per_atom)
    missing = sorted(elements - set(mu))
    if missing:
        raise ValueError(
            f"no elemental entry for {', '.join(missing)} in {path} (chemical system "
            f"{chemsys}; {len(rejected)} entries rejected by MP2020): an MP2020 hull needs "
            "every element's ground state"
        )
    return EntryHullReference(
        kept, mu, level_of_theory=VASP_LEVEL, name=f"{path.name} {'-'.join(sorted(elements))}"
    )
