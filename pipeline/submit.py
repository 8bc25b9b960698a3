"""Submitting a campaign to a FireWorks LaunchPad (``crystalforge campaign submit``).

The campaign graph is the one ``campaign run`` builds (same fixed job ids), converted with
``jobflow.managers.fireworks.flow_to_workflow``, plus a last job that records the candidates in
the results store. Jobs whose output is already in the store are left out, as in a local
resume. Every Firework carries a worker category — the generate job ``gpu``, the rest ``cpu``
by default — so GPU workers take generation and CPU workers everything else, jobs they create
at run time (relaxation shards, per-candidate DFT) included.

Submitting the same campaign twice adds nothing: each submission claims a numbered slot in a
LaunchPad collection (a unique ``_id``, so two submitters racing on one MongoDB cannot both
win), and a campaign whose workflow is still on the LaunchPad unfinished is not added again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jobflow import Flow

from flows.resume import stable_uuid
from pipeline.campaign import (
    CampaignConfig,
    check_campaign,
    drop_finished_jobs,
    prepare_campaign,
    record_campaign,
    record_score,
)
from pipeline.launchpad import LaunchPadLocation, open_launchpad
from pipeline.store import ResultsStore

SUBMISSIONS = "crystalforge_submissions"  # LaunchPad collection: one document per submission
STALE_CLAIM_SECONDS = 600


@dataclass(frozen=True)
class Categories:
    """FireWorks worker categories: ``generate`` for the generate job, ``default`` for all
    other jobs (an empty string leaves jobs to any worker)."""

    generate: str = "gpu"
    default: str = "cpu"


@dataclass
class Submission:
    """What a submission did."""

    campaign_id: str
    added: bool
    message: str
    fw_ids: list[int] = field(default_factory=list)
    reused_jobs: list[str] = field(default_factory=list)


def _set_category(job_or_flow: Any, category: str) -> None:
    # dict_mod merges into manager_config (a plain update would drop _allow_fizzled_parents);
    # dynamic (the default) passes it on to the jobs this one creates when it runs.
    job_or_flow.update_config({"_set": {"manager_config->_category": category}}, dict_mod=True)


def campaign_workflow(
    flow: Flow, campaign_id: str, results: ResultsStore, categories: Categories
) -> Any:
    """The FireWorks Workflow of a campaign graph (finished jobs already dropped), with the
    record job appended and the worker categories set."""
    from jobflow.managers.fireworks import flow_to_workflow

    score = flow.output
    record = record_campaign(score, campaign_id, results)
    record.name = "record"
    record.set_uuid(stable_uuid(campaign_id, "record"))
    record.update_metadata({"campaign_id": campaign_id, "stage": "record"})
    flow.add_jobs(record)
    if categories.default:
        _set_category(flow, categories.default)
    for job in flow.jobs:
        if job.name == "generate" and categories.generate:
            _set_category(job, categories.generate)
    return flow_to_workflow(
        flow,
        store=results.jobs,
        allow_external_references=True,
        name=flow.name,
        metadata={"campaign_id": campaign_id},
    )


def _claim(launchpad: Any, campaign_id: str) -> tuple[bool, str]:
    """Claim the next submission slot of ``campaign_id``; (claimed, why not)."""
    from pymongo.errors import DuplicateKeyError

    workflows = list(launchpad.workflows.find({"metadata.campaign_id": campaign_id}))
    unfinished = [w for w in workflows if w.get("state") != "COMPLETED"]
    if unfinished:
        latest = max(unfinished, key=lambda w: str(w.get("updated_on", "")))
        nodes = latest["nodes"]
        return False, (
            f"campaign {campaign_id} is already on the LaunchPad ({latest.get('state')}, "
            f"Fireworks {min(nodes)}..{max(nodes)}); nothing added. Run workers, or submit "
            "with --rerun-fizzled."
        )
    slot = f"{campaign_id}#{len(workflows)}"
    now = datetime.now(UTC)
    claim = {"_id": slot, "campaign_id": campaign_id, "submitted_on": now.isoformat()}
    try:
        launchpad.db[SUBMISSIONS].insert_one(claim)
    except DuplicateKeyError:
        # a claim whose workflow never arrived (the submitter died) goes stale after a while
        stale = (now - timedelta(seconds=STALE_CLAIM_SECONDS)).isoformat()
        taken = launchpad.db[SUBMISSIONS].find_one_and_update(
            {"_id": slot, "submitted_on": {"$lt": stale}}, {"$set": claim}
        )
        if taken is None:
            return False, f"campaign {campaign_id} is being submitted by another process"
    return True, ""


def require_persistent(results: ResultsStore) -> None:
    """Refuse in-memory stores: each FireWorks job reopens the store from its spec, so an
    in-memory one would be empty in every job (references to earlier outputs would break)."""
    from maggma.stores import MemoryStore, MontyStore

    stores = {
        "job store": results.jobs.docs_store,
        **{f"job store '{k}'": v for k, v in results.jobs.additional_stores.items()},
        "campaigns store": results.campaigns,
        "candidates store": results.candidates,
    }
    for name, store in stores.items():
        # (maggma's MontyStore is a MemoryStore subclass; on disk unless its path is :memory:)
        monty = isinstance(store, MontyStore)
        if (isinstance(store, MemoryStore) and not monty) or (
            monty and store.database_path == ":memory:"
        ):
            raise ValueError(
                f"the {name} is in memory ({type(store).__name__}); FireWorks workers need a "
                "persistent store: an embedded folder (--store DIR) or MongoDB (--store YAML)"
            )


def submit_campaign(
    chemsys: str,
    config: CampaignConfig,
    results: ResultsStore,
    location: LaunchPadLocation,
    campaign_id: str | None = None,
    categories: Categories | None = None,
    rerun_fizzled: bool = False,
) -> Submission:
    """Add a campaign to the LaunchPad at ``location`` (or record it, if it already finished).

    A campaign already on the LaunchPad is not added again; ``rerun_fizzled`` then sets its
    FIZZLED Fireworks to rerun (after the cause was fixed).

    Raises
    ------
    ValueError
        As :func:`pipeline.campaign.check_campaign` and ``prepare_campaign``; a
        LaunchPadError for a LaunchPad that cannot be opened.
    """
    require_persistent(results)
    categories = categories or Categories()
    execution = {
        "manager": "fireworks",
        "launchpad": str(location),
        "categories": {"generate": categories.generate, "default": categories.default},
    }
    system = check_campaign(chemsys, config, check_dft_here=False)  # before the LaunchPad opens
    with open_launchpad(location) as launchpad:
        document = prepare_campaign(system, config, results, campaign_id, execution=execution)
        campaign_id = document["campaign_id"]
        flow = config.maker().make(system, campaign_id)
        output_uuid = flow.output.uuid
        reused = drop_finished_jobs(flow, results)
        if not flow.jobs:  # everything already ran (e.g. locally): just record it
            score = results.jobs.get_output(output_uuid, load=True)
            record_score(results, document, score, reused_jobs=reused)
            return Submission(campaign_id, False, "every job already finished", [], reused)
        workflow = campaign_workflow(flow, campaign_id, results, categories)  # before claiming
        claimed, why = _claim(launchpad, campaign_id)
        if not claimed and rerun_fizzled:
            query = {"spec.campaign_id": campaign_id, "state": "FIZZLED"}
            fizzled = sorted(fw["fw_id"] for fw in launchpad.fireworks.find(query))
            for fw_id in fizzled:
                launchpad.rerun_fw(fw_id)
            why = f"{len(fizzled)} fizzled Fireworks set to rerun: {fizzled}"
        if not claimed:
            return Submission(campaign_id, False, why, [], reused)
        mapping = launchpad.add_wf(workflow)
    fw_ids = sorted(mapping.values())
    return Submission(
        campaign_id, True, f"added {len(fw_ids)} Fireworks to {location}", fw_ids, reused
    )
