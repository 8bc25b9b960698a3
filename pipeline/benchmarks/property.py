"""The property benchmark (preprint Section 2.5, Fig. 5g–h): S.U.N. structures meeting a
property constraint per budget of property calculations, MatterGen against screening.

Every expensive step is cached in the work folder (samples, relaxed samples, their verdicts,
each computed property value, keyed by structure id), so the command resumes where it stopped;
the result is a document in the results store's ``benchmarks`` collection and a table and
figure. The methods are described in :mod:`evaluation.discovery.property`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evaluation.records import CrystalRecord
from pipeline.store import ResultsStore

#: What a property benchmark measures with (the labels of ``crystalforge data labels``).
LABEL_MODEL = "chgnet"
#: Values above these are outliers, not hits (the paper's filter, D.6: bulk moduli above 600 GPa,
#: magnetic densities above 0.3 Å^-3).
PLAUSIBLE_MAXIMUM = {"bulk_modulus": 600.0, "magnetic_density": 0.3}


class PropertyBenchmarkSettings(BaseModel):
    """One property benchmark: the constraint, the budgets and the MatterGen arm's size."""

    model_config = ConfigDict(extra="forbid")

    property: str
    threshold: float
    budgets: list[int] = Field(min_length=1)
    samples: int = Field(64, ge=1, description="MatterGen samples conditioned on the constraint")
    checkpoint: str | None = None
    data: str = Field(description="a `data build` folder with properties.csv.gz")
    model_steps: int | None = Field(None, ge=1)
    guidance: float = Field(2.0, ge=0)
    seed: int = Field(0, ge=0)
    max_plausible: float | None = Field(
        None, description="values above are outliers (default: PLAUSIBLE_MAXIMUM's, else none)"
    )

    def ceiling(self) -> float:
        """The largest value that counts as a hit."""
        if self.max_plausible is not None:
            return self.max_plausible
        return PLAUSIBLE_MAXIMUM.get(self.property, float("inf"))

    @field_validator("budgets")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value):
            raise ValueError(f"budgets must be positive, got {value}")
        return sorted(set(value))

    def digest(self) -> str:
        """What the MatterGen arm's cache depends on (not the budgets or the outlier filter)."""
        text = json.dumps(self.model_dump(exclude={"budgets", "max_plausible"}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def screening_digest(self) -> str:
        """What the screening arm's cache depends on: the property and the data."""
        text = json.dumps({"property": self.property, "data": self.data}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def check_settings(settings: PropertyBenchmarkSettings) -> str:
    """Everything checkable before work; returns the checkpoint to sample.

    Raises
    ------
    ValueError
        Naming the option: a property not computable offline, a checkpoint not tuned on it, a
        data folder without its labels.
    """
    from flows.generators.mattergen import checkpoint_for, checkpoint_path
    from model import property_compute
    from model.checkpoint import read_payload

    name = settings.property
    if name not in property_compute.COMPUTERS or name in ("chemical_system", "space_group"):
        scalars = sorted(set(property_compute.COMPUTERS) - {"chemical_system", "space_group"})
        raise ValueError(
            f"--property {name}: not a scalar property computable offline at its labels' level "
            f"(choose {', '.join(scalars)})"
        )
    checkpoint = settings.checkpoint or str(checkpoint_for(frozenset({name})))
    try:
        payload = read_payload(checkpoint_path(checkpoint))
    except Exception as error:  # a missing or unreadable file: one line
        raise ValueError(f"--checkpoint {checkpoint}: {error}") from None
    if name not in {p["name"] for p in payload.get("properties", [])}:
        raise ValueError(f"--checkpoint {checkpoint} is not fine-tuned on {name}")
    data = Path(settings.data)
    for needed in ("dataset.pt", "properties.csv.gz"):
        if not (data / needed).is_file():
            raise ValueError(f"--data {data}: no {needed} (a `crystalforge data build` folder)")
    header = _read_labels(data).columns
    if name not in header:
        raise ValueError(f"--data {data}: properties.csv.gz has no {name} column")
    return checkpoint


def _read_labels(data: Path) -> Any:
    import pandas as pd

    return pd.read_csv(data / "properties.csv.gz")


def label_level(data: Path, name: str) -> str:
    """The level of theory the data's labels of ``name`` were computed at (its
    ``properties.json``), e.g. ``mlff:chgnet-0.3.0``."""
    described = data / "properties.json"
    if described.is_file():
        entry = json.loads(described.read_text()).get("properties", {}).get(name, {})
        if entry.get("level_of_theory"):
            return str(entry["level_of_theory"])
    return f"as computed by model.property_compute with {LABEL_MODEL}"


class ValueCache:
    """Computed property values by structure id, appended to a JSONL file as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, float | None] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.values[row["id"]] = row["value"]

    def compute(
        self, name: str, records: Sequence[CrystalRecord], say: Callable[[str], None]
    ) -> list[float | None]:
        """The value of each record, computing (in chunks) the ones not cached."""
        from model.property_compute import compute_chunk

        todo = [r for r in records if r.id not in self.values]
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            outcomes = compute_chunk(name, [r.structure for r in chunk], LABEL_MODEL)
            with self.path.open("a") as handle:
                for record, outcome in zip(chunk, outcomes, strict=True):
                    value = float(outcome.value) if outcome.labelled else None
                    self.values[record.id] = value
                    handle.write(json.dumps({"id": record.id, "value": value}) + "\n")
            say(f"benchmark property: {name} of {min(start + 16, len(todo))}/{len(todo)} computed")
        return [self.values[r.id] for r in records]


def mattergen_pool(
    settings: PropertyBenchmarkSettings, checkpoint: str, work: Path, say: Callable[[str], None]
) -> tuple[list[CrystalRecord], dict[str, Any]]:
    """The S.U.N. samples (CHGNet-relaxed) conditioned on the constraint, in a seeded random
    order, and what it took to get them."""
    from evaluation.io.crystals import read_crystals, write_extxyz
    from evaluation.reference import load_reference
    from evaluation.relax.run import relax
    from evaluation.report.evaluate import EvaluationSettings, evaluate
    from flows.generators.mattergen import generate_structures

    samples, relaxed_file = work / "samples.extxyz", work / "relaxed.extxyz"
    verdicts_file = work / "verdicts.json"
    if not samples.exists():
        say(f"benchmark property: sampling {settings.samples} conditioned on the constraint")
        result = generate_structures(
            checkpoint,
            settings.samples,
            batch_size=min(settings.samples, 64),
            seed=settings.seed,
            num_steps=settings.model_steps,
            device="cpu",
            conditions={settings.property: f">={settings.threshold}"},
            guidance=settings.guidance,
        )
        write_extxyz(result.records, samples)
    records = read_crystals(samples).records
    if not relaxed_file.exists():
        say(f"benchmark property: relaxing {len(records)} samples with {LABEL_MODEL}")
        results = relax([r.structure for r in records], LABEL_MODEL, 0.05, 500, progress=True)
        kept = [
            CrystalRecord(result.structure, record.id, record.source, dict(record.properties))
            for record, result in zip(records, results, strict=True)
            if result.ok and result.structure is not None
        ]
        write_extxyz(kept, relaxed_file)
    relaxed = read_crystals(relaxed_file).records
    if not verdicts_file.exists():
        say(f"benchmark property: S.U.N. verdicts of {len(relaxed)} relaxed samples")
        evaluation = evaluate(
            relaxed,
            load_reference(None).records,
            EvaluationSettings(relax=LABEL_MODEL, hull="known-phases"),
            reference_name="shipped",
        )
        rows = {row.id: {"sun": row.sun, "hull": row.hull_label} for row in evaluation.rows}
        verdicts_file.write_text(json.dumps(rows))
    verdicts = json.loads(verdicts_file.read_text())
    pool = [r for r in relaxed if verdicts.get(r.id, {}).get("sun")]
    order = np.random.default_rng(settings.seed).permutation(len(pool))
    hulls = sorted({v["hull"] for v in verdicts.values() if v.get("hull")})
    about = {
        "n_samples": len(records),
        "n_relaxed": len(relaxed),
        "n_sun": len(pool),
        "checkpoint": Path(checkpoint).name,
        "hull": ", ".join(hulls) or "no hull",
    }
    return [pool[i] for i in order], about


def screening_pool(
    settings: PropertyBenchmarkSettings,
) -> tuple[list[CrystalRecord], np.ndarray, dict[str, Any]]:
    """The unlabelled structures of the data ranked by the predictor (best first), the labels,
    and the predictor's description."""
    import torch

    from evaluation.discovery.property import cross_validated, descriptors
    from model.data import CrystalTensors
    from model.structures import batch_to_structures

    data = Path(settings.data)
    tensors = CrystalTensors.load(data / "dataset.pt")
    structures = batch_to_structures(tensors.batch(torch.arange(len(tensors))))
    labels = _read_labels(data).set_index("id")[settings.property]
    values = np.array([labels.get(i, np.nan) for i in tensors.ids], dtype=float)
    known = np.isfinite(values)
    features = np.array([descriptors(s) for s in structures])
    predictor, quality = cross_validated(features[known], values[known])
    unlabelled = np.flatnonzero(~known)
    predicted = predictor.predict(features[unlabelled]) if len(unlabelled) else np.array([])
    ranked = unlabelled[np.argsort(-predicted, kind="stable")]
    pool = [CrystalRecord(structures[i], tensors.ids[i], "data") for i in ranked]
    about = {
        "n_pool": len(pool),
        "predictor": "a ridge regression on composition and density descriptors",
        "quality": quality,
    }
    return pool, values[known], about


def run_property_benchmark(
    settings: PropertyBenchmarkSettings,
    store: ResultsStore,
    work: Path,
    say: Callable[[str], None] = print,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the benchmark, caching under ``work`` (the MatterGen arm per setting,
    the screening arm per property and data: other thresholds reuse it); returns its document,
    also saved in the store. ``checkpoint``: what :func:`check_settings` returned, when the
    caller checked already."""
    from evaluation.discovery.property import hits_by_budget

    started = time.perf_counter()
    checkpoint = checkpoint or check_settings(settings)
    arm = work / f"property-{settings.property}-{settings.digest()}"
    screened = work / f"screening-{settings.property}-{settings.screening_digest()}"
    for folder in (arm / "mattergen", screened):
        folder.mkdir(parents=True, exist_ok=True)
    largest = max(settings.budgets)
    pool, mattergen = mattergen_pool(settings, checkpoint, arm / "mattergen", say)
    mattergen_values = ValueCache(arm / "mattergen" / "values.jsonl").compute(
        settings.property, pool[:largest], say
    )
    ranked, labelled, screening = screening_pool(settings)
    screening_values = ValueCache(screened / "values.jsonl").compute(
        settings.property, ranked[:largest], say
    )
    window = (settings.threshold, settings.ceiling())
    mattergen["hits"] = hits_by_budget(mattergen_values, *window, settings.budgets)
    screening["hits"] = hits_by_budget(screening_values, *window, settings.budgets)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    document = {
        "benchmark_id": f"property-{settings.property}-{settings.digest()}",
        "kind": "property",
        "settings": settings.model_dump(),
        "property": settings.property,
        "threshold": settings.threshold,
        "max_plausible": settings.ceiling(),
        "budgets": settings.budgets,
        "level_of_theory": label_level(Path(settings.data), settings.property),
        "protocol": (
            f"Structures with {settings.property} >= {settings.threshold} found per budget B "
            f"of property calculations at the labels' level ({LABEL_MODEL}). MatterGen: S.U.N. "
            "samples (CHGNet-relaxed; stable against the DFT hull of the known phases, MLFF "
            "energies mapped to its scale), B of them in a seeded random order. Screening: the "
            "unlabelled structures of the fine-tuning data, the B best by the predictor. "
            "Labelled data: the labels that already meet the constraint. Values above "
            f"{settings.ceiling()} are outliers, not hits (the paper's filter)."
        ),
        "methods": {
            "mattergen": mattergen,
            "screening": screening,
            "labelled data": {
                "hits": int(((labelled >= window[0]) & (labelled <= window[1])).sum()),
                "outliers": int((labelled > window[1]).sum()),
                "n_labelled": len(labelled),
            },
        },
        "updated_at": now,
        "seconds": time.perf_counter() - started,
    }
    store.save_benchmark(document)
    return document


def write_property_report(document: dict[str, Any], folder: Path) -> list[Path]:
    """``property_<name>_ge<threshold>.{json,md,png,svg}`` in ``folder``."""
    from evaluation.discovery.property import markdown, plot

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"property_{document['property']}_ge{document['threshold']:g}"  # ge0.2, ge400
    data, table = folder / f"{stem}.json", folder / f"{stem}.md"
    data.write_text(json.dumps(document, indent=1, default=str))
    table.write_text(markdown(document))
    return [data, table, *plot(document, folder / stem)]
