"""Generator Makers: each turns a chemical system into candidates with provenance.

A candidate is a :class:`~flows.contracts.Candidate` (id, ``Structure.as_dict()``,
provenance); provenance always names the generator, its parameters, the seed and the index.
Every Maker satisfies the :class:`Generator` protocol: ``make(chemsys, n_candidates)``, and a
``category`` (the model's is ``gpu``) that routes its job to FireWorks workers of that
category. :func:`build_generator` is the one registry that makes a generator by name from a
campaign's :class:`GeneratorSettings`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jobflow import Job, Maker, job

from evaluation.records import CrystalRecord
from flows.contracts import Candidate
from flows.progress import report


@dataclass(frozen=True)
class GeneratorSettings:
    """A campaign's settings that generators take; each generator uses the ones it needs.

    Attributes
    ----------
    seed
        Makes generation reproducible (``rss``, ``substitution``, ``mattergen``).
    reference_path
        Extra parent structures for ``substitution`` (default: the shipped reference set).
    input_path
        The crystal file of the ``file`` generator.
    checkpoint
        The ``mattergen`` checkpoint (empty: the shipped one).
    num_steps
        Sampling steps ``T`` of ``mattergen`` (default: the model's).
    rss_minsep
        Tuned MINSEP per pair of elements for ``rss`` (the paper's second round).
    substitution_all
        ``substitution`` enumerates every map of the sources' elements onto the system's, the
        λ-probable ones first (the benchmark's "every unique substitution").
    substitution_max_sites
        ``substitution`` skips source structures with more sites (``None``: its default, 100).
    """

    seed: int = 0
    reference_path: str | None = None
    input_path: str = ""
    checkpoint: str = ""
    num_steps: int | None = None
    rss_minsep: dict[str, float] | None = None
    substitution_all: bool = False
    substitution_max_sites: int | None = None


@runtime_checkable
class Generator(Protocol):
    """What a campaign needs of a generator (every Maker of this module satisfies it).

    ``make`` returns the job whose output is the ``list[Candidate]``; ``category``, when not
    ``None``, is the FireWorks worker category the campaign gives that job.
    """

    name: str
    category: str | None

    def make(self, chemsys: str, n_candidates: int) -> Job:
        """The job generating up to ``n_candidates`` candidates in ``chemsys``."""
        ...

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> Generator:
        """The generator a campaign's settings describe."""
        ...


def _candidates(records: list[CrystalRecord], generator: str) -> list[Candidate]:
    report(f"generate: {len(records)} candidates ({generator})")
    return [
        Candidate(
            candidate_id=record.id,
            structure=record.structure.as_dict(),
            provenance={"generator": generator, **record.properties},
        )
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
    pair_minsep
        Tuned MINSEP per pair (``"A-B"``: Å) from a first round's relaxations (the paper's
        second round, :func:`flows.generators.rss.tuned_minsep`); ``None``: the first round's
        radius rule.
    category
        FireWorks worker category of the job (``None``: the campaign's default).
    """

    name: str = "generate rss"
    seed: int = 0
    symmops: tuple[int, int] = (2, 4)
    minsep: tuple[float, float] = (0.7, 3.0)
    pair_minsep: dict[str, float] | None = None
    category: str | None = None

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> RSSGeneratorMaker:
        """Random structures with the campaign's seed (and tuned MINSEP, if any)."""
        return cls(seed=settings.seed, pair_minsep=settings.rss_minsep)

    @job(data=True)  # the structures go to the data store: see flows.contracts
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """``n_candidates`` random structures spanning every element of ``chemsys``."""
        from flows.generators.rss import generate_rss

        records, _failures = generate_rss(
            chemsys,
            n_candidates,
            seed=self.seed,
            symmops=self.symmops,
            minsep=self.minsep,
            pair_minsep=self.pair_minsep,
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
    category
        FireWorks worker category of the job (``None``: the campaign's default).
    """

    name: str = "generate substitution"
    threshold: float = 1e-3
    reference_path: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    category: str | None = None

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> SubstitutionGeneratorMaker:
        """Substitutions over the campaign's reference, with its seed."""
        options: dict[str, Any] = {"enumerate_all": True} if settings.substitution_all else {}
        if settings.substitution_max_sites is not None:
            options["max_sites"] = settings.substitution_max_sites
        return cls(seed=settings.seed, reference_path=settings.reference_path, options=options)

    @job(data=True)  # the structures go to the data store: see flows.contracts
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
    ``category``: FireWorks worker category of the job (``None``: the campaign's default).
    """

    name: str = "generate file"
    path: str = ""
    category: str | None = None

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> FileGeneratorMaker:
        """The campaign's input file."""
        return cls(path=settings.input_path)

    @job(data=True)  # the structures go to the data store: see flows.contracts
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

    As the paper's chemical-system protocol does (D.4), a checkpoint fine-tuned on
    ``chemical_system`` is conditioned on the campaign's system, and one tuned on
    ``energy_above_hull`` on 0 eV/atom, with guidance ``guidance``; with no checkpoint named,
    the shipped one tuned on both is used when it ships (else the unconditional default). The
    element mask keeps every sample inside the system either way.

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
    guidance
        Classifier-free guidance scale ``γ`` for a fine-tuned checkpoint (paper: 2).
    """

    checkpoint: str = ""
    name: str = "generate mattergen"
    num_steps: int | None = None
    batch_size: int = 64
    seed: int = 0
    device: str | None = None
    category: str = "gpu"
    guidance: float = 2.0

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> MatterGenGeneratorMaker:
        """Samples of the campaign's checkpoint, with its seed and step count."""
        return cls(checkpoint=settings.checkpoint, num_steps=settings.num_steps, seed=settings.seed)

    @job(data=True)  # the structures go to the data store: see flows.contracts
    def make(self, chemsys: str, n_candidates: int) -> list[Candidate]:
        """``n_candidates`` samples (fewer if some diverge) whose species lie in ``chemsys``."""
        from flows.generators.chemsys import parse_chemsys
        from flows.generators.mattergen import GENERATOR_NAME, generate_structures

        checkpoint, conditions = chemical_system_conditions(self.checkpoint, chemsys)
        result = generate_structures(
            checkpoint,
            n_candidates,
            batch_size=self.batch_size,
            seed=self.seed,
            num_steps=self.num_steps,
            elements=parse_chemsys(chemsys),
            device=self.device,
            conditions=conditions,
            guidance=self.guidance,
        )
        return _candidates(result.records, GENERATOR_NAME)


#: What the chemical-system protocol conditions on (D.4), in order of preference.
CHEMSYS_PROPERTIES = ("chemical_system", "energy_above_hull")


def chemical_system_conditions(checkpoint: str, chemsys: str) -> tuple[str, dict[str, str]]:
    """The checkpoint to sample and its D.4 conditions for ``chemsys``: the system and
    E_hull = 0, each where the checkpoint was tuned on it. An empty ``checkpoint`` picks the
    shipped one tuned on both, else the unconditional default."""
    from flows.generators.mattergen import checkpoint_for, checkpoint_path
    from model.checkpoint import read_payload

    if not checkpoint:
        try:
            checkpoint = str(checkpoint_for(frozenset(CHEMSYS_PROPERTIES)))
        except ValueError:  # no such checkpoint ships: the unconditional one, element-masked
            return "", {}
    tuned = {raw["name"] for raw in read_payload(checkpoint_path(checkpoint)).get("properties", [])}
    targets = {"chemical_system": chemsys, "energy_above_hull": "0"}
    return checkpoint, {name: targets[name] for name in CHEMSYS_PROPERTIES if name in tuned}


#: The generators a campaign can use, by the name its settings and the CLI give.
GENERATORS: dict[str, type[Generator]] = {
    "rss": RSSGeneratorMaker,
    "substitution": SubstitutionGeneratorMaker,
    "file": FileGeneratorMaker,
    "mattergen": MatterGenGeneratorMaker,
}


def build_generator(name: str, settings: GeneratorSettings) -> Generator:
    """The generator ``name`` (a key of :data:`GENERATORS`) configured by ``settings``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    if name not in GENERATORS:
        raise ValueError(f"must be one of {', '.join(sorted(GENERATORS))}, got {name!r}")
    return GENERATORS[name].from_settings(settings)
