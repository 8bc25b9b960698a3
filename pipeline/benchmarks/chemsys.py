"""The chemical-system benchmark (preprint Section 2.3, D.4, Fig. 3): MatterGen vs RSS vs
substitution, each system × method a campaign in the results store.

Every method runs the same protocol (:class:`~pipeline.campaign.CampaignConfig` with the
preset's settings and ``hull: same-level``): generate → MLFF pre-relaxation → valid, unique,
not known → top-K by predicted E_hull → final stage → S.U.N. RSS runs as the paper's two
rounds: round 1 with AIRSS's MINSEP rule, round 2 with MINSEP tuned on round 1's relaxed
structures (:func:`flows.generators.rss.tuned_minsep`); the RSS final set is the K lowest
predicted E_hull over both rounds (each round sends its own top K to the final stage, which
contains the top K of the union). Once every campaign of a system has finished, the final
structures of all methods are judged together on the combined hull
(:mod:`evaluation.discovery.combined`) at the final stage's level of theory.

Running again resumes: finished campaigns are reused from the store (their ids follow their
settings), unfinished ones resume. With a LaunchPad, campaigns are submitted instead of run;
each invocation submits what is ready (RSS round 2 once round 1 has finished) and scores the
systems whose campaigns have all finished.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymatgen.core import Structure

from evaluation.discovery.combined import FinalStructure, score_system
from evaluation.discovery.systems import BenchmarkSystem
from evaluation.hull.core import EntryHullReference
from evaluation.hull.screening import known_phase_hull
from evaluation.matching.index import ReferenceIndex
from evaluation.metrics.sun import USABLE_RELAXATIONS, SUNSettings
from flows.contracts import HullFailure, hull_outcome
from flows.generators.rss import tuned_minsep
from flows.scoring import novelty_reference
from pipeline.benchmarks.presets import SET_BY_THE_BENCHMARK, ChemsysPreset, held_out_checkpoint
from pipeline.campaign import (
    CampaignConfig,
    check_campaign,
    default_campaign_id,
    effective_status,
    run_campaign,
)
from pipeline.store import ResultsStore

METHODS = ("mattergen", "rss", "substitution")


@dataclass(frozen=True)
class PlannedCampaign:
    """One campaign of the benchmark: a system, a method and its round (RSS: 1 or 2)."""

    system: str
    method: str
    round: int
    config: CampaignConfig

    @property
    def campaign_id(self) -> str:
        return default_campaign_id(self.system, self.config)


def campaign_config(
    preset: ChemsysPreset, method: str, *, round_: int = 1, rss_minsep: dict | None = None
) -> CampaignConfig:
    """The campaign settings of ``method`` under ``preset`` (the same protocol for all)."""
    budget = preset.campaign_budget(method)
    mattergen = method == "mattergen"
    shared = preset.campaign
    return CampaignConfig(
        **{
            **shared,
            "generator": method,
            "num_candidates": budget,
            "top_k": min(preset.top_k, budget),
            "seed": shared.get("seed", 0) + (round_ - 1),  # round 2 draws other structures
            "checkpoint": (shared.get("checkpoint") or str(held_out_checkpoint()))
            if mattergen
            else None,
            "model_steps": shared.get("model_steps") if mattergen else None,
            # one level of theory: reference compounds relaxed with each MLFF
            "hull": "same-level",
            "rss_minsep": rss_minsep,
            "substitution_mode": "all" if method == "substitution" else None,
            "substitution_max_sites": preset.substitution_max_sites
            if method == "substitution"
            else None,
        }
    )


def check_benchmark(
    systems: Sequence[BenchmarkSystem], preset: ChemsysPreset, *, check_dft_here: bool = True
) -> None:
    """Every campaign's input, before anything runs or any store is created (a FireWorks
    run leaves the DFT code's check to its workers: ``check_dft_here`` false).

    Raises
    ------
    ValueError
        Naming the system and method whose campaign would be refused.
    """
    for system in systems:
        for method in METHODS:
            try:
                config = campaign_config(preset, method)
                check_campaign(system.name, config, check_dft_here=check_dft_here)
            except ValueError as error:
                raise ValueError(f"{system.name} ({method}): {error}") from None


def _completed(store: ResultsStore, campaign_id: str) -> bool:
    document = store.campaign(campaign_id)
    return bool(document) and document.get("status") == "completed"


def _by_prediction(store: ResultsStore, campaign_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The campaigns' candidates with a pre-relaxation E_hull, lowest first."""
    placed = [
        document
        for campaign_id in campaign_ids
        for document in store.query_candidates(campaign_id)
        if (document.get("prerelax") or {}).get("e_above_hull") is not None
    ]
    return sorted(placed, key=lambda d: d["prerelax"]["e_above_hull"])


def round_two_minsep(
    store: ResultsStore, round_one: str, quantile: float
) -> dict[str, float] | None:
    """MINSEP tuned on the lowest ``quantile`` of round 1's relaxed structures (by predicted
    E_hull); ``None`` when round 1 relaxed nothing."""
    relaxed = _by_prediction(store, [round_one])
    if not relaxed:
        return None
    keep = relaxed[: max(1, round(quantile * len(relaxed)))]
    return tuned_minsep([Structure.from_dict(d["prerelax"]["structure"]) for d in keep])


def final_structures(
    store: ResultsStore, campaign_ids: Sequence[str], top_k: int
) -> list[FinalStructure]:
    """The final-stage structures of a method's campaigns: its ``top_k`` lowest predicted
    E_hull among the selected candidates whose final stage gave a structure and an energy."""
    selected = [d for d in _by_prediction(store, campaign_ids) if d.get("selected")]
    finals = []
    for document in selected[:top_k]:
        final = document.get("final") or {}
        if (
            final.get("status") not in USABLE_RELAXATIONS
            or final.get("energy_per_atom") is None
            or not final.get("structure")
        ):
            continue  # the final stage failed for it: it counts in no method's rate
        finals.append(
            FinalStructure(
                key=f"{document['campaign_id']}/{document['candidate_id']}",
                generated=Structure.from_dict(document["structure"]),
                relaxed=Structure.from_dict(final["structure"]),
                energy_per_atom=float(final["energy_per_atom"]),
                level_of_theory=final["level_of_theory"],
                status=final["status"],
            )
        )
    return finals


def final_level_reference(
    store: ResultsStore, planned: PlannedCampaign
) -> EntryHullReference | str:
    """The same-level hull reference the campaign's final stage was placed on (its ``final
    hull`` job's input), or why there is none."""
    flow = planned.config.maker().make(planned.system, planned.campaign_id)
    final_hull = next(job for job in flow.jobs if job.name == "final hull")
    reference = final_hull.function_args[2]["same_level"]
    if reference is None:
        return "the final stage has no same-level hull"
    outcome = hull_outcome(store.jobs.get_output(reference.uuid, load=True))
    if outcome is None:
        return "the final-level hull reference is not in the store"
    if isinstance(outcome, HullFailure):
        return outcome.error
    return outcome.reference()


@dataclass
class SystemRun:
    """Where one system stands: its campaigns per method, and its score once all finished."""

    system: BenchmarkSystem
    campaigns: dict[str, list[str]] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


Runner = Callable[[PlannedCampaign], dict[str, Any]]


def local_runner(store: ResultsStore) -> Runner:
    """Run (or resume) each campaign here; returns its document."""

    def run(planned: PlannedCampaign) -> dict[str, Any]:
        return run_campaign(planned.system, planned.config, store, planned.campaign_id)

    return run


def fireworks_runner(store: ResultsStore, location: Any) -> Runner:
    """Submit each campaign to the LaunchPad at ``location`` (once; workers run it): the
    model's sampling to ``gpu`` workers, everything else (the baselines' generation too) to
    ``cpu`` workers."""
    from pipeline.submit import Categories, submit_campaign

    def run(planned: PlannedCampaign) -> dict[str, Any]:
        generate = "gpu" if planned.method == "mattergen" else "cpu"
        submission = submit_campaign(
            planned.system,
            planned.config,
            store,
            location,
            planned.campaign_id,
            Categories(generate=generate, default="cpu"),
        )
        return store.campaign(submission.campaign_id) or {"status": "submitted"}

    return run


def advance_system(
    system: BenchmarkSystem,
    preset: ChemsysPreset,
    store: ResultsStore,
    runner: Runner,
    say: Callable[[str], None] = print,
) -> SystemRun:
    """Run (or submit) every campaign of ``system`` that is ready and not finished."""
    run = SystemRun(system)
    for method in METHODS:
        rounds = preset.rounds(method)
        minsep = None
        for round_ in range(1, rounds + 1):
            if round_ == 2:
                first = run.campaigns[method][0]
                if not _completed(store, first):
                    run.waiting.append(f"{method} round 2 waits for round 1 ({first})")
                    break
                minsep = round_two_minsep(store, first, preset.minsep_quantile)
                if minsep is None:
                    run.failures.append(f"{method} round 2: round 1 relaxed no structure")
                    break
            config = campaign_config(preset, method, round_=round_, rss_minsep=minsep)
            planned = PlannedCampaign(system.name, method, round_, config)
            run.campaigns.setdefault(method, []).append(planned.campaign_id)
            if _completed(store, planned.campaign_id):
                continue
            label = method + (f" round {round_}" if rounds > 1 else "")
            if not getattr(runner, "runs_nothing", False):
                say(f"benchmark: {system.name} {label} ({planned.campaign_id})")
            document = runner(planned)
            status = document.get("status")
            if status == "failed":
                run.failures.append(f"{label}: {document.get('failure')}")
            elif status != "completed":
                run.waiting.append(f"{label}: {status}")
    return run


def score_run(
    run: SystemRun,
    preset: ChemsysPreset,
    store: ResultsStore,
    index: ReferenceIndex,
    settings: SUNSettings,
    reference_complete: bool,
) -> dict[str, Any] | None:
    """The system's combined-hull score, once all its campaigns finished (else ``None``)."""
    if run.waiting or run.failures:
        return None
    finals = {
        method: final_structures(store, ids, preset.top_k) for method, ids in run.campaigns.items()
    }
    anchor = PlannedCampaign(run.system.name, "mattergen", 1, campaign_config(preset, "mattergen"))
    reference = final_level_reference(store, anchor)
    if isinstance(reference, str):
        run.failures.append(f"no combined hull: {reference}")
        return None
    score = score_system(
        run.system.name,
        reference,
        finals,
        index,
        settings,
        reference_complete=reference_complete,
        check_hull=known_phase_hull() if preset.shared().engine == "mlff" else None,
    ).to_dict()
    budgets = preset.budgets()
    for method, ids in run.campaigns.items():
        documents = [store.campaign(c) or {} for c in ids]
        score["methods"][method].update(
            budget=budgets[method],
            campaigns=ids,
            generated=sum((d.get("summary") or {}).get("generated", 0) for d in documents),
            wall_s=sum((d.get("timings") or {}).get("wall", 0.0) for d in documents),
        )
    score.update(exploration=run.system.exploration, n_elements=run.system.n_elements)
    return score


def benchmark_id(preset: ChemsysPreset, systems: Sequence[BenchmarkSystem]) -> str:
    """``chemsys-<preset>-<digest>``: the same preset and systems are one benchmark."""
    text = json.dumps(
        {"preset": preset.model_dump(), "systems": [s.name for s in systems]}, sort_keys=True
    )
    return f"chemsys-{preset.name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass
class ScoreOnly:
    """A runner that runs nothing (``--score-only``): the benchmark scores the systems whose
    campaigns have all finished, and says where the others stand (stored status, or not run)."""

    store: ResultsStore
    runs_nothing: bool = True

    def __call__(self, planned: PlannedCampaign) -> dict[str, Any]:
        document = self.store.campaign(planned.campaign_id)
        if document is None:
            return {"status": "not run (--score-only)"}
        return {**document, "status": effective_status(document)}


def run_benchmark(
    systems: Sequence[BenchmarkSystem],
    preset: ChemsysPreset,
    store: ResultsStore,
    runner: Runner | None = None,
    say: Callable[[str], None] = print,
    *,
    save: bool = True,
    started: float | None = None,
    carried: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Advance every system (run or submit its campaigns), score those whose campaigns all
    finished, and save the benchmark document in the store after each system (a run stopped
    half-way leaves the systems it scored); returns the document.

    ``save=False`` saves nothing (a ``--jobs`` child process: the parent scores the whole
    benchmark); ``started`` is the ``time.perf_counter()`` the recorded seconds count from;
    ``carried`` (:func:`carried_scores`) holds systems scored by an earlier run of the same
    preset on another store: they are taken as they are, not run again.
    """
    carried = carried or {}
    started = time.perf_counter() if started is None else started
    runner = runner or local_runner(store)
    settings = SUNSettings()
    shared = preset.shared()
    index, complete = novelty_reference(shared.reference, settings)  # the campaigns' own
    identifier = benchmark_id(preset, systems)
    previous = store.benchmark(identifier) or {}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    document = {
        "benchmark_id": identifier,
        "kind": "chemsys",
        "preset": preset.model_dump(),
        "campaign": shared.model_dump(exclude=set(SET_BY_THE_BENCHMARK)),
        "budgets": preset.budgets(),
        "methods": list(METHODS),
        "systems": [s.name for s in systems],
        "results": [],
        "pending": [],
        "created_at": previous.get("created_at", now),
    }
    scored = {r["chemsys"]: r for r in previous.get("results", [])}
    for position, system in enumerate(systems):
        if system.name in carried:
            document["results"].append(carried[system.name])
            say(f"benchmark: {system.name} carried from {carried[system.name]['carried_from']}")
        else:
            scorer = (index, settings, complete)
            _advance_and_score(system, document, preset, store, runner, say, scorer)
        # the systems not reached yet keep their earlier score, if any, until they are
        later = [scored[s.name] for s in systems[position + 1 :] if s.name in scored]
        partial = {**document, "results": document["results"] + later}
        partial.update(updated_at=datetime.now(UTC).isoformat(timespec="seconds"))
        partial["seconds"] = time.perf_counter() - started
        if save:
            store.save_benchmark(partial)
        if position == len(systems) - 1:
            document = partial
    return document


def _advance_and_score(
    system: BenchmarkSystem,
    document: dict[str, Any],
    preset: ChemsysPreset,
    store: ResultsStore,
    runner: Runner,
    say: Callable[[str], None],
    scorer: tuple[Any, SUNSettings, Any],
) -> None:
    """Run ``system``'s campaigns that are ready, and add its score (or why it has none) to
    ``document``; ``scorer`` is ``score_run``'s novelty index, settings and completeness."""
    run = advance_system(system, preset, store, runner, say)
    index, settings, complete = scorer
    score = score_run(run, preset, store, index, settings, complete)
    if score is None:
        document["pending"].append(
            {
                "chemsys": system.name,
                "campaigns": run.campaigns,
                "waiting": run.waiting,
                "failures": run.failures,
            }
        )
        why = "; ".join(run.failures + run.waiting)
        say(f"benchmark: {system.name} not scored yet ({why})")
    else:
        document["results"].append(score)
        say(f"benchmark: {system.name} scored: " + _one_line(score))


def carried_scores(document: dict[str, Any], preset: ChemsysPreset) -> dict[str, dict[str, Any]]:
    """The per-system scores of an earlier run's ``chemsys.json``, by system, each marked
    ``carried_from`` with that run's benchmark id and date.

    A laptop cannot hold a 27-system run in one sitting on one store; the scores are
    self-contained (each system's combined hull is its own), so a later run of the same
    preset may take them instead of running those systems again.

    Raises
    ------
    ValueError
        ``document`` is not a chemical-system benchmark, or was run with other budgets.
    """
    if document.get("kind") != "chemsys" or not isinstance(document.get("results"), list):
        raise ValueError("not a chemsys.json of `benchmark chemsys`")
    ours = json.loads(json.dumps(preset.model_dump(), default=str))
    if document.get("preset") != ours:
        theirs = document.get("preset", {}).get("name", "?")
        raise ValueError(f"its run used the {theirs} preset's budgets, not {preset.name}'s")
    origin = f"{document.get('benchmark_id')} ({document.get('updated_at', '?')})"
    return {
        r["chemsys"]: {**r, "carried_from": r.get("carried_from", origin)}
        for r in document["results"]
    }


def _one_line(score: dict[str, Any]) -> str:
    parts = []
    for method, value in score["methods"].items():
        parts.append(f"{method} {value['n_sun']}/{value['n_final']} S.U.N.")
    return ", ".join(parts) + f" (hull {score['coverage'].get('label', '')})"
