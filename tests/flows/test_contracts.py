"""The typed contracts between a campaign's jobs, its resume helpers and its generators."""

from __future__ import annotations

import json

import pytest
from jobflow import Flow, JobStore, job, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder, MontyEncoder, jsanitize
from pymatgen.core import Lattice, Structure

from flows.contracts import (
    STAGE_FIELDS,
    Candidate,
    CandidateFlags,
    FilterOutput,
    HullFailure,
    HullOutcome,
    HullPlacement,
    HullReferenceDoc,
    HullStageOutput,
    ScoreOutput,
    ShardOutput,
    StageEntry,
    StageOutput,
    hull_outcome,
)
from flows.dft.hull import build_dft_hull
from flows.dft.stage import dft_stage_row, vasp_entries_hull
from flows.documents import StageResult
from flows.generate import (
    GENERATORS,
    FileGeneratorMaker,
    Generator,
    GeneratorSettings,
    MatterGenGeneratorMaker,
    RSSGeneratorMaker,
    SubstitutionGeneratorMaker,
    build_generator,
)
from flows.relax import merge_shards, with_input_structures
from flows.resume import finished_output, resumable, stable_uuid
from flows.scoring import _hull_from, _stage_doc, hull_spec, hull_stage, select_top_k

LEVEL = "mlff:chgnet-0.3.0"


def rocksalt(a: float = 5.64) -> Structure:
    return Structure(Lattice.cubic(a / 2**0.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def entry(cid: str, energy: float = -3.4, status: str = "ok") -> StageEntry:
    return StageEntry(
        candidate_id=cid,
        status=status,
        structure=rocksalt() if status == "ok" else None,  # a Structure is stored as a dict
        energy_per_atom=energy if status == "ok" else None,
        level_of_theory=LEVEL if status == "ok" else None,
        n_steps=7,
        rmsd=0.01,
    )


def memory_store() -> JobStore:
    return JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})


def examples() -> list:
    """One instance of every contract, each with its nested models and a structure."""
    na = Structure(Lattice.cubic(4.2), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    shard = ShardOutput(stage="prerelax", results=[entry("a")], trajectories={"a": [-3.0, -3.4]})
    return [
        Candidate(candidate_id="a", structure=rocksalt(), provenance={"generator": "file"}),
        entry("a"),
        shard,
        StageOutput(stage="final", results=[entry("a"), entry("b", status="failed")], seconds=2),
        FilterOutput(
            flags={"a": CandidateFlags(passed=True, verdict={"unique": True})},
            counts={"generated": 1, "relaxed": 1, "passed_filter": 1},
        ),
        HullStageOutput(hull={"a": HullPlacement(hull_message="not relaxed")}, name="toy"),
        build_dft_hull.original(
            "Na", ["Na"], [{"structure": na, "energy_per_atom": -1.3, "level_of_theory": LEVEL}], 0
        ),
        HullFailure(error="no hull for Na-Xx"),
        ScoreOutput(candidates=[{"candidate_id": "a"}], summary={"n_sun": 0}, timings={"a": 1.0}),
    ]


# ----------------------------------------------------------------------------- the contracts


def test_the_stage_fields_are_the_stage_result_fields_a_stage_entry_carries():
    hull_fields = {
        "e_above_hull",
        "formation_energy_per_atom",
        "hull_reference",
        "hull_label",
        "hull_coverage",
        "hull_message",
    }
    assert set(STAGE_FIELDS) == set(StageResult.model_fields) - hull_fields
    assert set(STAGE_FIELDS) <= set(StageEntry.model_fields)
    assert list(STAGE_FIELDS) == [f for f in StageResult.model_fields if f in STAGE_FIELDS]
    document = _stage_doc(entry("a"), HullPlacement(hull_message="off the hull"))
    assert set(document) == set(StageResult.model_fields)
    assert document["hull_message"] == "off the hull" and document["n_steps"] == 7


@pytest.mark.parametrize("contract", examples(), ids=lambda c: type(c).__name__)
def test_every_contract_round_trips_through_monty_as_fireworks_and_the_job_store_ship_it(
    contract,
):
    text = json.dumps(contract, cls=MontyEncoder)
    assert json.loads(text, cls=MontyDecoder) == contract
    stored = jsanitize(contract, strict=True, allow_bson=True, enum_values=True)  # the JobStore
    assert stored["@class"] == type(contract).__name__
    assert MontyDecoder().process_decoded(stored) == contract
    raw = type(contract).model_validate(stored)  # a raw stored output reads too (JSON lists)
    assert raw.model_dump(mode="json") == contract.model_dump(mode="json")


def test_structures_travel_as_dicts_whatever_a_job_is_given():
    candidate = Candidate(candidate_id="a", structure=rocksalt())
    assert candidate.structure == rocksalt().as_dict()
    decoded = MontyDecoder().process_decoded(jsanitize(candidate, strict=True))
    assert isinstance(decoded, Candidate) and decoded.structure == candidate.structure
    ready = with_input_structures([candidate.model_dump()], StageOutput(results=[entry("a")]))
    assert ready[0].input_structure == entry("a").structure


def test_outputs_still_read_like_the_dicts_they_replaced():
    row = entry("a")
    assert row["status"] == "ok" and row.get("reason") == "" and "rmsd" in row
    assert "error" not in row and row.get("error", "none") == "none"
    with pytest.raises(KeyError):
        row["error"]
    assert {**HullFailure(error="x")} == {"error": "x"}


def test_a_failed_hull_is_a_typed_failure_with_its_reason():
    na = Structure(Lattice.cubic(4.2), ["Na", "Na"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    row = {"structure": na.as_dict(), "energy_per_atom": -1.3, "level_of_theory": LEVEL}
    failed = build_dft_hull.original("Cl-Na", ["Na", "Cl"], [row, {"failed": True}], 0.0)
    assert isinstance(failed, HullFailure) and isinstance(failed, HullOutcome)
    assert "Cl" in failed.error
    no_entries = vasp_entries_hull.original("Li-O", None)
    assert isinstance(no_entries, HullFailure) and "vasp_hull_entries" in no_entries.error
    hull, reason = _hull_from(hull_spec("same-level", None, failed))
    assert hull is None and reason == failed.error
    assert _hull_from(hull_spec("same-level", None, None)) == (None, "no same-level hull was built")
    built = build_dft_hull.original("Na", ["Na"], [row], 0.0)
    assert isinstance(built, HullReferenceDoc) and built.reference().level_of_theory == LEVEL
    assert hull_outcome(jsanitize(failed, strict=True)) == failed  # a raw stored one, by shape
    assert hull_outcome(built.model_dump()) == built


def test_a_dft_row_is_a_stage_entry():
    failed = dft_stage_row.original("c1", rocksalt().as_dict(), None)
    assert isinstance(failed, StageEntry) and not failed.usable and failed.status == "failed"
    assert dft_stage_row("c1", rocksalt().as_dict(), None).output_schema is StageEntry


# ----------------------------------------------------------------- jobs, schemas and references


def test_job_outputs_validate_against_their_schemas_and_flows_reference_their_fields():
    """Shards merge into a stage output, the hull stage places it on the known-phase hull and
    select takes only the fields it needs (references checked when the graph is built)."""
    shards = [
        ShardOutput(stage="prerelax", results=[entry("a", -3.3)], seconds=1.0),
        ShardOutput(stage="prerelax", results=[entry("b", -3.2), entry("c", status="failed")]),
    ]
    merged = merge_shards(shards)
    hull = hull_stage(merged.output, hull_spec("known-phases", None), "Cl-Na")
    flags = {cid: CandidateFlags(passed=cid != "b") for cid in "abc"}
    selected = select_top_k(hull.output.hull, flags, 2)
    with pytest.raises(AttributeError, match="HullStageOutput does not have attribute"):
        hull.output.placements  # noqa: B018 (the reference itself is the check)
    store = memory_store()
    run_locally(Flow([merged, hull, selected]), store=store, ensure_success=True, log=False)

    stage = StageOutput.model_validate(store.get_output(merged.uuid, load=True))
    assert [r.candidate_id for r in stage.results] == ["a", "b", "c"] and stage.seconds == 1.0
    # the structures live in the data store; the jobs collection keeps a blob reference
    assert store.get_output(merged.uuid)["results"]["store"] == "data"
    placed = HullStageOutput.model_validate(store.get_output(hull.uuid))
    assert placed.hull["c"].hull is None and placed.hull["c"].hull_message == "not relaxed"
    assert placed.hull["a"].hull["level_of_theory"] == LEVEL and placed.coverage is not None
    assert store.get_output(selected.uuid) == ["a"]  # b did not pass, c has no E_hull


def test_a_stage_that_replaces_itself_leaves_its_schema_to_the_job_giving_its_output():
    """jobflow would apply a replaced job's schema to the reference its replacement stores."""
    from flows.relax import MLFFRelaxMaker

    assert MLFFRelaxMaker().make([], "campaign").output_schema is None
    assert merge_shards([]).output_schema is StageOutput
    assert build_dft_hull("Na", [], [], 0.0).output_schema is HullOutcome


# ---------------------------------------------------------------------------------- resume


@job
def _produce() -> StageOutput:
    return StageOutput(stage="prerelax", results=[entry("a")], seconds=3.0)


@job
def _look(uuid: str) -> dict:
    found = finished_output(uuid)
    return {"found": found is not None, "model": type(found).__name__}


@pytest.mark.filterwarnings("ignore:Some jobs are not connected")
def test_a_resumable_job_finds_a_finished_output_decoded_into_its_model():
    store = memory_store()
    produced = _produce()
    produced.set_uuid(stable_uuid("test", "produce"))
    run_locally(produced, store=store, ensure_success=True, log=False)

    blind = _look(produced.uuid)
    seeing = resumable(_look(produced.uuid), stable_uuid("test", "look"))
    assert seeing.uuid == stable_uuid("test", "look") and seeing.config.expose_store
    run_locally(Flow([blind, seeing]), store=store, ensure_success=True, log=False)
    assert store.get_output(blind.uuid) == {"found": False, "model": "NoneType"}
    assert store.get_output(seeing.uuid) == {"found": True, "model": "StageOutput"}
    assert finished_output(produced.uuid) is None  # outside a job there is no store to ask


# ------------------------------------------------------------------------------ generators


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_registered_generator_satisfies_the_protocol(name):
    settings = GeneratorSettings(
        seed=3, reference_path="ref.zip", input_path="in.cif", checkpoint="m.pt", num_steps=9
    )
    generator = build_generator(name, settings)
    assert isinstance(generator, Generator) and isinstance(generator, GENERATORS[name])
    assert generator.category in (None, "gpu")


def test_the_registry_builds_each_generator_from_the_campaign_settings():
    settings = GeneratorSettings(
        seed=3, reference_path="ref.zip", input_path="in.cif", checkpoint="m.pt", num_steps=9
    )
    assert build_generator("rss", settings) == RSSGeneratorMaker(seed=3)
    assert build_generator("substitution", settings) == SubstitutionGeneratorMaker(
        seed=3, reference_path="ref.zip"
    )
    assert build_generator("file", settings) == FileGeneratorMaker(path="in.cif")
    assert build_generator("mattergen", settings) == MatterGenGeneratorMaker(
        checkpoint="m.pt", num_steps=9, seed=3
    )
    with pytest.raises(ValueError, match="must be one of file, mattergen, rss, substitution"):
        build_generator("magic", settings)
    assert not isinstance(object(), Generator)


def test_a_campaign_config_makes_its_generator_through_the_registry():
    from pipeline.campaign import CampaignConfig

    config = CampaignConfig(generator="substitution", seed=5, reference="ref.zip")
    assert config.maker().generator == SubstitutionGeneratorMaker(seed=5, reference_path="ref.zip")
    file_config = CampaignConfig(generator="file", input="in.cif")
    assert config.generator_settings().seed == 5
    assert file_config.maker().generator == FileGeneratorMaker(path="in.cif")
