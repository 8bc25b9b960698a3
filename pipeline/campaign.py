"""Running a campaign locally on the results store, resumably.

The graph of a campaign is rebuilt identically from its id (fixed job UUIDs). Before running,
every top-level job whose final output is already in the store is left out; the rest run
with ``jobflow.run_locally`` on the same store, resolving references to the finished outputs.
A process killed mid-campaign therefore loses nothing that had finished: each finished job's
output was written to the sqlite store when the job ended.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from jobflow import Flow, job, run_locally
from pydantic import Field, ValidationInfo, field_validator, model_validator

from evaluation.hull.mlff_reference import reference_elements
from evaluation.hull.screening import UnknownEnergyScale, model_energy_scale
from evaluation.hull.stability import HullChoice
from evaluation.metrics.sun import SUNSettings
from flows.campaign import CampaignMaker
from flows.contracts import ScoreOutput
from flows.dft import check_engine, tasks_maker
from flows.dft.schema import properties_to_tasks
from flows.dft.stage import DFTStageMaker
from flows.documents import CampaignDoc, CandidateDoc
from flows.generate import GENERATORS, GeneratorSettings, build_generator, records_in_system
from flows.generators.chemsys import parse_chemsys, require_arity
from flows.generators.mattergen import check_checkpoint
from flows.relax import MLFFRelaxMaker
from pipeline.store import ResultsStore

ENGINES = ("mlff", "gpaw", "vasp")


class CampaignConfig(SUNSettings):
    """A campaign's settings (``configs/campaign/*.yaml``; CLI flags override).

    The verdict settings (``stability_threshold``, ``disorder``, ``matcher``,
    ``require_charge_balance``, ``count_unverified``, ``reference_complete``, ...) are
    :class:`~evaluation.metrics.sun.SUNSettings`', the ones ``crystalforge evaluate`` takes.
    ``hull`` says where MLFF energies go (``evaluation.hull.stability``).
    """

    generator: str = "rss"
    num_candidates: int = Field(64, ge=1)
    top_k: int = Field(8, ge=1)
    engine: str = "mlff"
    prerelax_model: str = "chgnet"
    final_model: str = "7net-l3i5"
    fmax: float = Field(0.05, gt=0)
    max_steps: int = Field(300, ge=1)
    final_fmax: float = Field(0.05, gt=0)
    final_max_steps: int = Field(300, ge=1)
    shard_size: int = Field(32, ge=1)
    relax_jobs: int = Field(
        1,
        ge=1,
        exclude=True,  # how a campaign runs, not what it computes: not part of its id
        description="worker processes per MLFF relaxation shard (CPU, single-machine runs)",
    )
    seed: int = 0
    reference: str | None = None
    input: str | None = Field(None, description="crystal file for the 'file' generator")
    checkpoint: str | None = Field(
        None, description="model checkpoint for 'mattergen' (default: the shipped one)"
    )
    model_steps: int | None = Field(None, ge=1, description="sampling steps T for 'mattergen'")
    hull: HullChoice = Field(
        "known-phases",
        description="MLFF energies on the DFT hull of the known phases, or a same-level hull",
    )
    properties: list[str] = Field(
        default_factory=list, description="DFT properties of the top-K: band_gap, bulk_modulus"
    )
    dft_settings: dict[str, Any] = Field(
        default_factory=dict, description="GPAW input-set overrides (flows.dft.gpaw_settings)"
    )
    vasp_hull_entries: str | None = Field(
        None, description="MP2020-compatible DFT entries (JSON) for the vasp engine's hull"
    )
    rss_minsep: dict[str, float] | None = Field(
        None,
        description="rss: tuned MINSEP (Å) per pair 'A-B' from a first round's relaxations "
        "(the paper's second RSS round; crystalforge benchmark chemsys sets it)",
    )
    substitution_mode: Literal["probable", "all"] | None = Field(
        None,
        description="substitution: 'probable' (the λ model's charge-balanced maps; default) or "
        "'all' (every map of the sources' elements, the probable ones first)",
    )
    substitution_max_sites: int | None = Field(
        None,
        ge=1,
        description="substitution: skip source structures with more sites (default 100, the "
        "paper's prototypes)",
    )

    @field_validator("generator", "engine")
    @classmethod
    def _known_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = sorted(GENERATORS) if info.field_name == "generator" else list(ENGINES)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> CampaignConfig:
        if self.properties and self.engine == "mlff":
            raise ValueError("--properties needs a DFT engine (--engine gpaw or vasp)")
        properties_to_tasks(self.properties)  # unknown names fail here, not on a worker
        if self.engine != "mlff":
            tasks_maker(self.engine, ("relax",), self.dft_settings)  # bad settings fail here
        if self.generator == "file" and not self.input:
            raise ValueError("the file generator needs an input file (--input)")
        if self.hull == "known-phases":
            for option, model in (
                ("prerelax_model", self.prerelax_model),
                ("final_model", self.final_model),
            ):
                if option == "final_model" and self.engine != "mlff":
                    continue
                try:
                    model_energy_scale(model)
                except UnknownEnergyScale as error:
                    raise ValueError(f"{option} {model}: {error}") from None
        if self.top_k > self.num_candidates:
            raise ValueError(
                f"top_k {self.top_k} cannot exceed num_candidates {self.num_candidates}"
            )
        return self

    def maker(self) -> CampaignMaker:
        """The :class:`~flows.campaign.CampaignMaker` these settings describe."""
        return CampaignMaker(
            generator=build_generator(self.generator, self.generator_settings()),
            prerelax=MLFFRelaxMaker(
                name="prerelax",
                model=self.prerelax_model,
                fmax=self.fmax,
                max_steps=self.max_steps,
                shard_size=self.shard_size,
                n_jobs=self.relax_jobs,
            ),
            final=self._final_stage(),
            n_candidates=self.num_candidates,
            top_k=self.top_k,
            reference_path=self.reference,
            hull=self.hull,
            sun_settings=self.sun_settings().model_dump(),
        )

    def generator_settings(self) -> GeneratorSettings:
        """What these settings say about the generator (each one takes what it uses)."""
        return GeneratorSettings(
            seed=self.seed,
            reference_path=self.reference,
            input_path=self.input or "",
            checkpoint=self.checkpoint or "",
            num_steps=self.model_steps,
            rss_minsep=self.rss_minsep,
            substitution_all=self.substitution_mode == "all",
            substitution_max_sites=self.substitution_max_sites,
        )

    def _final_stage(self) -> MLFFRelaxMaker | DFTStageMaker:
        """The final stage on this config's engine."""
        if self.engine == "mlff":
            return MLFFRelaxMaker(
                name="final",
                model=self.final_model,
                fmax=self.final_fmax,
                max_steps=self.final_max_steps,
                shard_size=self.shard_size,
                n_jobs=self.relax_jobs,
            )
        maker = tasks_maker(self.engine, properties_to_tasks(self.properties), self.dft_settings)
        return DFTStageMaker(tasks_maker=maker, hull_entries=self.vasp_hull_entries)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _references(value: Any) -> Iterator[str]:
    """The job uuids of the unresolved ``OutputReference`` documents inside ``value``."""
    if isinstance(value, dict):
        if value.get("@class") == "OutputReference" and "uuid" in value:
            yield value["uuid"]
        else:
            for item in value.values():
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def job_finished(store: ResultsStore, uuid: str, _seen: set[str] | None = None) -> bool:
    """The job's latest output is in the store, and so is every output it refers to.

    A replaced job (the pre-relaxation hands its shards to a new flow) stores, under its own
    uuid, a reference to the new flow's output; that reference can be stored before the flow
    ran. A campaign killed in between must run the job again on resume, not skip it and fail
    later on a reference to an output that never came (seen in the benchmark).
    """
    docs = list(store.jobs.query({"uuid": uuid}, properties=["index", "output"]))
    if not docs:
        return False
    output = max(docs, key=lambda d: d["index"]).get("output")
    if output is None:
        return False
    seen = (_seen or set()) | {uuid}
    return all(ref in seen or job_finished(store, ref, seen) for ref in _references(output))


def drop_finished_jobs(flow: Flow, store: ResultsStore) -> list[str]:
    """Remove the jobs whose output is already stored; returns the names of those reused.

    Their outputs are still what later jobs reference: references resolve from the store.
    """
    finished = [i for i, job in enumerate(flow.jobs) if job_finished(store, job.uuid)]
    reused = [flow.jobs[i].name for i in finished]
    if len(finished) == len(flow.jobs):
        flow.output = None  # nothing left to run; the output is the stored score
        flow.remove_jobs(finished)
    elif finished:
        flow.remove_jobs(finished)
    return reused


#: Settings added after campaigns were first stored: left out of the id while unset, so a
#: campaign stored before they existed keeps its id.
_LATER_SETTINGS = ("rss_minsep", "substitution_mode", "substitution_max_sites")


def default_campaign_id(system: str, config: CampaignConfig) -> str:
    """``SYSTEM-GENERATOR-DIGEST``, the digest of the settings: the same campaign submitted or
    run twice is one campaign (its finished jobs are reused), a changed setting a new one."""
    values = config.model_dump()
    for name in _LATER_SETTINGS:
        if values.get(name) is None:
            values.pop(name, None)
    settings = json.dumps(values, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{system}|{settings}".encode()).hexdigest()[:8]
    return f"{system}-{config.generator}-{digest}"


def check_campaign(chemsys: str, config: CampaignConfig, *, check_dft_here: bool = True) -> str:
    """Check a campaign's input before anything is written; returns the normalised system.

    ``check_dft_here`` is off for a FireWorks submission: the DFT code must run on the CPU
    workers, not necessarily where the campaign is submitted.

    Raises
    ------
    ValueError
        For a malformed chemical system or one the generator cannot use, or a mattergen
        checkpoint that is missing or unreadable.
    DFTUnavailable
        When ``check_dft_here`` and the DFT engine's code cannot run here.
    """
    elements = parse_chemsys(chemsys)
    require_arity(elements, 2, config.generator)
    no_reference = sorted(set(elements) - reference_elements())
    if no_reference:  # no elemental phase: no hull, no E_hull, nothing to judge
        raise ValueError(
            f"{', '.join(no_reference)} in {chemsys}: no known elemental phase to build a hull "
            "against (the MLFFs and the reference stop at Pu)"
        )
    if config.generator == "mattergen":  # fail now, not when the generate job runs
        check_checkpoint(config.checkpoint)
    if config.generator == "file":
        check_input_file(config.input or "", elements)
    if config.engine != "mlff" and check_dft_here:  # fail now, in one line
        check_engine(config.engine)
    return "-".join(elements)


def changed_settings(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``"field: stored -> requested"`` for each setting that differs (compared as JSON)."""

    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return [
        f"{key}: {stored.get(key)!r} -> {requested.get(key)!r}"
        for key in sorted(set(stored) | set(requested))
        if canonical(stored.get(key)) != canonical(requested.get(key))
    ]


def check_input_file(path: str, elements: tuple[str, ...]) -> int:
    """The number of crystals of ``path`` inside the system ``elements``; a missing or
    unreadable file, or one with none inside the system, raises ``ValueError`` naming
    ``--input``."""
    from evaluation.io.crystals import read_crystals
    from evaluation.records import CrystalInputError

    try:
        records = read_crystals(Path(path)).records
    except CrystalInputError as error:
        raise ValueError(f"--input {path}: {error}") from None
    inside = records_in_system(records, elements)
    if not inside:
        raise ValueError(
            f"--input {path}: none of its {len(records)} readable crystals lies in "
            f"{'-'.join(elements)}"
        )
    return len(inside)


def prepare_campaign(
    system: str,
    config: CampaignConfig,
    store: ResultsStore,
    campaign_id: str | None = None,
    *,
    execution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create (or refresh) the campaign document of a campaign ``system`` that
    :func:`check_campaign` accepted; returns it.

    ``execution`` describes a FireWorks submission (the document's status is then
    ``submitted``); by default the campaign runs here.

    Raises
    ------
    ValueError
        For an id already used for another chemical system.
    """
    campaign_id = campaign_id or default_campaign_id(system, config)
    existing = store.campaign(campaign_id)
    if existing and existing["chemsys"] != system:
        raise ValueError(f"campaign {campaign_id} exists for {existing['chemsys']}, not {system}")
    if existing:
        changed = changed_settings(existing.get("config") or {}, config.model_dump())
        if changed:  # its finished jobs would be reused under settings they were not run with
            raise ValueError(
                f"campaign {campaign_id} exists with other settings ({'; '.join(changed)}): "
                "give a new --campaign-id, or none (the default id follows the settings)"
            )
    document = CampaignDoc(
        campaign_id=campaign_id,
        chemsys=system,
        config=config.model_dump(),
        status="running" if execution is None else "submitted",
        created_at=existing["created_at"] if existing else _now(),
        updated_at=_now(),
        execution=execution or _this_process(),
    ).model_dump()
    store.save_campaign(document)
    return document


class _FailedJobs(logging.Handler):
    """The jobs ``run_locally`` reports as failed, with the last line of their error.

    ``run_locally`` logs a failing job ("<name> failed with exception:" and the traceback) and
    goes on with the jobs that do not need it; it raises nothing. This handler keeps those
    records so a failed campaign can say which job failed and why.
    """

    LOGGER = "jobflow.managers.local"
    MARKER = " failed with exception:"

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        name, marker, trace = record.getMessage().partition(self.MARKER)
        if marker:
            last = trace.strip().splitlines()[-1] if trace.strip() else "no message"
            last = re.sub(r"^[\w.]+\.(\w+):", r"\1:", last)  # module.Error: -> Error:
            self.failures.append(f"job '{name}' failed: {last}")

    def first(self) -> str | None:
        return self.failures[0] if self.failures else None

    @contextmanager
    def watching(self) -> Iterator[None]:
        logger = logging.getLogger(self.LOGGER)
        level = logger.level
        logger.addHandler(self)
        logger.setLevel(min(level or logging.INFO, logging.INFO))
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


def _this_process() -> dict[str, Any]:
    return {"manager": "local", "host": socket.gethostname(), "pid": os.getpid()}


def effective_status(document: dict[str, Any]) -> str:
    """The stored status, except that a local run whose process is gone is ``interrupted``
    (a killed run stays ``running`` in the store; it resumes when run again)."""
    status = document.get("status", "created")
    execution = document.get("execution") or {}
    if status != "running" or execution.get("manager") != "local" or "pid" not in execution:
        return status
    if execution.get("host") != socket.gethostname():
        return status  # another machine's process: cannot tell from here
    try:
        os.kill(int(execution["pid"]), 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:  # alive, another user's
        return status
    return status


def record_score(
    store: ResultsStore,
    document: dict[str, Any],
    score: ScoreOutput | dict[str, Any],
    wall: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write a finished campaign's candidates and mark its document completed; returns it.

    Candidates are upserted by (campaign, candidate), so recording twice duplicates nothing.
    ``wall`` (seconds) joins the stage timings; ``extra`` goes into the summary (e.g. the
    reused jobs).
    """
    score = ScoreOutput.model_validate(score)  # the score job's output, as stored or decoded
    candidates = [
        CandidateDoc(campaign_id=document["campaign_id"], **candidate).model_dump()
        for candidate in score.candidates
    ]
    store.save_candidates(candidates)
    document.update(
        status="completed",
        failure=None,
        updated_at=_now(),
        summary={**score.summary, **extra},
        timings={**score.timings, **({"wall": wall} if wall is not None else {})},
    )
    store.save_campaign(document)
    return document


@job
def record_campaign(
    score: ScoreOutput | dict[str, Any], campaign_id: str, results: ResultsStore
) -> str:
    """The last job of a submitted campaign: its candidates and summary into the results store
    (a local run records them itself, after ``run_locally``)."""
    from monty.json import jsanitize

    # FireWorks hands resolved references over as objects (Structures); the documents are dicts
    score = jsanitize(score, strict=True, enum_values=True)
    store = results.connect()
    try:
        document = store.campaign(campaign_id)
        if document is None:
            raise ValueError(f"campaign {campaign_id} is not in the results store")
        document.pop("_id", None)
        started = datetime.fromisoformat(document["created_at"])
        record_score(store, document, score, (datetime.now(UTC) - started).total_seconds())
    finally:
        store.close()
    return campaign_id


def run_campaign(
    chemsys: str,
    config: CampaignConfig,
    store: ResultsStore,
    campaign_id: str | None = None,
    *,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a campaign here; returns the campaign document (a failed one names the
    job that failed and its error in ``failure``). ``verbose``: jobflow's own log lines too.

    Raises
    ------
    ValueError, DFTUnavailable
        As :func:`check_campaign` and :func:`prepare_campaign`.
    """
    system = check_campaign(chemsys, config)
    document = prepare_campaign(system, config, store, campaign_id)
    campaign_id = document["campaign_id"]
    flow = config.maker().make(document["chemsys"], campaign_id)
    output_uuid = flow.output.uuid
    reused = drop_finished_jobs(flow, store)
    started = time.perf_counter()
    failed_jobs = _FailedJobs()
    if flow.jobs:
        # a failing job does not stop the others (a DFT failure is that candidate's alone)
        with failed_jobs.watching():
            run_locally(flow, store=store.jobs, allow_external_references=True, log=verbose)
    finished = job_finished(store, output_uuid)
    score = store.jobs.get_output(output_uuid, load=True) if finished else None
    if score is None:
        unfinished = [j.name for j in flow.jobs if not job_finished(store, j.uuid)]
        failure = failed_jobs.first() or (
            f"job '{unfinished[0]}' did not finish" if unfinished else "a job did not finish"
        )
        document.update(status="failed", updated_at=_now(), failure=failure[:500])
        store.save_campaign(document)
        return document
    return record_score(store, document, score, time.perf_counter() - started, reused_jobs=reused)
