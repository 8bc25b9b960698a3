"""Generator Makers: each turns a chemical system into candidates with provenance.

A candidate is ``{"candidate_id", "structure": Structure.as_dict(), "provenance": {...}}``;
provenance always names the generator, its parameters, the seed and the index. Every Maker
has the same ``make(chemsys, n_candidates)``; a Maker with a ``category`` (the model's, ``gpu``)
has its job routed to FireWorks workers of that category by the campaign.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jobflow import Maker, job

from evaluation.records import CrystalRecord
from flows.progress import report

Candidate = dict[str, Any]


def _candidates(records: list[CrystalRecord], generator: str) -> list[Candidate]:
    report(f"generate: {len(records)} candidates ({generator})")
    return [
        {
            "candidate_id": record.id,
            "structure": record.structure.as_dict(),
            "provenance": {"generator": generator, **record.properties},
        }
        for record in records
    ]


@dataclass
class RSSGeneratorMaker(Maker):
    """Random symmetric structures (AIRSS-style, pyxtal), Appendix D.4.1 of the preprint.

    Attributes
    ----------
    seed
        Makes the run reproducible; candidate ``i`` depends only on (seed, i).
    symmops
        Range of point-group operations (AIRSS SYMMOPS; the paper: 2–4).
    minsep
        Range of minimum separations in Å (AIRSS MINSEP; the paper: 0.7–3).
    """

    name: str = "generate rss"
    seed: int = 0
    symmops: tuple[int, int] = (2, 4)
    minsep: tuple[float, float] = (0.7, 3.0)

    @job
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """``n_candidates`` random structures spanning every element of ``chemsys``."""
        from flows.generators.rss import generate_rss

        records, _failures = generate_rss(
            chemsys, n_candidates, seed=self.seed, symmops=self.symmops, minsep=self.minsep
        )
        return _candidates(records, "rss")


@dataclass
class SubstitutionGeneratorMaker(Maker):
    """Ion substitution (Hautier 2011 λ table) over prototypes and reference structures.

    Attributes
    ----------
    threshold
        Smallest substitution probability kept.
    reference_path
        Extra parent structures (default: the shipped reference set).
    """

    name: str = "generate substitution"
    threshold: float = 1e-3
    reference_path: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @job
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """Up to ``n_candidates`` unique decorations landing in ``chemsys``, most probable first."""
        from evaluation.reference import load_reference
        from flows.generators.substitution import generate_substitutions

        reference = load_reference(self.reference_path).records
        records = generate_substitutions(
            chemsys,
            reference=reference,
            threshold=self.threshold,
            max_candidates=n_candidates,
            seed=self.seed,
            **self.options,
        )
        return _candidates(records, "substitution")


def records_in_system(records: list[CrystalRecord], elements: Iterable[str]) -> list[CrystalRecord]:
    """The records whose elements all belong to the chemical system ``elements``."""
    system = set(elements)
    return [r for r in records if {el.symbol for el in r.structure.composition} <= system]


@dataclass
class FileGeneratorMaker(Maker):
    """Candidates read from a crystal file (any format of :mod:`evaluation.io.crystals`).

    For structures generated elsewhere (another model, a colleague's list). Structures outside
    the campaign's chemical system are left out; the first ``n_candidates`` inside are used.
    """

    name: str = "generate file"
    path: str = ""

    @job
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """The file's structures within ``chemsys``, in file order."""
        from evaluation.io.crystals import read_crystals

        records = records_in_system(read_crystals(self.path).records, chemsys.split("-"))
        records = records[:n_candidates]
        for index, record in enumerate(records):
            record.properties = {"path": self.path, "index": index, "source_id": record.label}
        return _candidates(records, "file")


@dataclass
class MatterGenGeneratorMaker(Maker):
    """Crystals sampled from a trained checkpoint, restricted to the chemical system's elements.

    Attributes
    ----------
    checkpoint
        The model checkpoint (``best.pt`` of ``crystalforge train``); empty: the shipped one,
        resolved on the worker that runs the job.
    num_steps
        Predictor steps ``T``; default: the model's (1000 at paper settings).
    batch_size
        Crystals sampled together (GPU memory bounds it).
    seed
        Makes the run reproducible on one device (see :mod:`flows.generators.mattergen`).
    device
        ``cpu`` or ``cuda``; default: the GPU when the worker has one.
    category
        The FireWorks worker category the campaign gives this job.
    """

    checkpoint: str = ""
    name: str = "generate mattergen"
    num_steps: int | None = None
    batch_size: int = 64
    seed: int = 0
    device: str | None = None
    category: str = "gpu"

    @job
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """``n_candidates`` samples (fewer if some diverge) whose species lie in ``chemsys``."""
        from flows.generators.chemsys import parse_chemsys
        from flows.generators.mattergen import GENERATOR_NAME, generate_structures

        result = generate_structures(
            self.checkpoint,
            n_candidates,
            batch_size=self.batch_size,
            seed=self.seed,
            num_steps=self.num_steps,
            elements=parse_chemsys(chemsys),
            device=self.device,
        )
        return _candidates(result.records, GENERATOR_NAME)


GENERATORS: dict[str, type[Maker]] = {
    "rss": RSSGeneratorMaker,
    "substitution": SubstitutionGeneratorMaker,
    "file": FileGeneratorMaker,
    "mattergen": MatterGenGeneratorMaker,
}
