"""The results store: a jobflow JobStore plus campaign and candidate collections.

Embedded default: maggma ``MontyStore`` (sqlite files) in one folder, no server. All four
collections live in one MontyDB database there:

* ``jobs`` — jobflow job outputs (the JobStore's docs store);
* ``data`` — large job outputs (relaxation trajectories), the JobStore's additional store;
* ``campaigns`` — one :class:`flows.documents.CampaignDoc` per campaign;
* ``candidates`` — one :class:`flows.documents.CandidateDoc` per candidate, indexed on
  ``campaign_id``, the flags and ``e_above_hull``;
* ``benchmarks`` — one document per benchmark run (``crystalforge benchmark``), keyed by
  ``benchmark_id``: its settings, the campaigns it ran and its scored results.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobflow import JobStore
from maggma.stores import MontyStore
from monty.json import MSONable
from montydb import MontyClient

from pipeline.compat.maggma import monty_config_locked, serialise_monty_connect

DATABASE_NAME = "crystalforge"
CANDIDATE_INDEXES = ("campaign_id", "candidate_id", "sun", "stable", "novel", "e_above_hull")


def _monty(path: Path, collection: str, key: str) -> MontyStore:
    return MontyStore(
        collection,
        database_path=str(path),
        database_name=DATABASE_NAME,
        storage="sqlite",
        key=key,
    )


def _create_table(store: Any) -> None:
    """Create an embedded collection's sqlite table now, not on its first write.

    MontyDB creates the file first and the table a moment later, and takes the file for the
    table: two worker threads writing a new collection at once would read a table that is
    not there yet ("no such table: documents").
    """
    if not isinstance(store, MontyStore) or store.database_path == ":memory:":
        return
    # A client of our own (public MontyDB API) on the files the connected store configured;
    # it reads the storage config file, which another thread's or process's connect may be
    # rewriting.
    with monty_config_locked(store.database_path), MontyClient(store.database_path) as client:
        database = client[store.database_name]
        if store.collection_name not in database.list_collection_names():
            database.create_collection(store.collection_name)


@dataclass
class ResultsStore(MSONable):
    """Everything a campaign writes, in one place.

    It serialises (``as_dict``) to its stores' specs, so a FireWorks job can reopen it on a
    worker: the embedded store by its absolute folder, MongoDB by its connection settings.

    Attributes
    ----------
    jobs
        The jobflow ``JobStore`` the graph runs on.
    campaigns, candidates
        maggma stores of campaign and candidate documents.
    benchmarks
        maggma store of benchmark documents (``None``: a store spec without one; it is then
        made next to ``campaigns``).
    """

    jobs: JobStore
    campaigns: Any
    candidates: Any
    benchmarks: Any = None

    def __post_init__(self) -> None:
        if self.benchmarks is None:  # same kind of store, database and server as campaigns
            spec = self.campaigns.as_dict()
            spec.update(collection_name="benchmarks", key="benchmark_id")
            self.benchmarks = type(self.campaigns).from_dict(spec)

    @classmethod
    def embedded(cls, path: str | Path) -> ResultsStore:
        """MontyDB (sqlite) files in the folder ``path``, created if missing."""
        folder = Path(path).resolve()  # absolute: workers elsewhere must find the same files
        folder.mkdir(parents=True, exist_ok=True)
        jobs = JobStore(
            _monty(folder, "jobs", "uuid"),
            additional_stores={"data": _monty(folder, "data", "blob_uuid")},
        )
        return cls(
            jobs=jobs,
            campaigns=_monty(folder, "campaigns", "campaign_id"),
            candidates=_monty(folder, "candidates", "candidate_key"),
            benchmarks=_monty(folder, "benchmarks", "benchmark_id"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ResultsStore:
        """Stores from a jobflow-style YAML spec (MongoDB in production).

        ``JOB_STORE`` takes jobflow's own format (``docs_store`` and ``additional_stores``,
        each with a maggma ``type``); ``CAMPAIGNS_STORE`` and ``CANDIDATES_STORE`` are maggma
        store specs in the same ``type`` + keyword form, e.g.::

            JOB_STORE:
              docs_store: {type: MongoStore, database: crystalforge, collection_name: jobs,
                           host: mongo, port: 27017}
              additional_stores:
                data: {type: GridFSStore, database: crystalforge, collection_name: data,
                       host: mongo, port: 27017}
            CAMPAIGNS_STORE: {type: MongoStore, database: crystalforge,
                              collection_name: campaigns, host: mongo, key: campaign_id}
            CANDIDATES_STORE: {type: MongoStore, database: crystalforge,
                               collection_name: candidates, host: mongo, key: candidate_key}

        ``BENCHMARKS_STORE`` is optional: by default the ``benchmarks`` collection sits next to
        ``campaigns`` (same store type, database and server).
        """
        import maggma.stores
        import yaml

        spec = yaml.safe_load(Path(path).read_text()) or {}
        missing = {"JOB_STORE", "CAMPAIGNS_STORE", "CANDIDATES_STORE"} - set(spec)
        if missing:
            raise ValueError(f"store config {path} lacks {sorted(missing)}")

        def build(store_spec: dict[str, Any]) -> Any:
            store_spec = dict(store_spec)
            kind = store_spec.pop("type", None)
            if not hasattr(maggma.stores, str(kind)):
                raise ValueError(f"store config {path}: unknown store type {kind!r}")
            return getattr(maggma.stores, kind)(**store_spec)

        return cls(
            jobs=JobStore.from_dict_spec(spec["JOB_STORE"]),
            campaigns=build(spec["CAMPAIGNS_STORE"]),
            candidates=build(spec["CANDIDATES_STORE"]),
            benchmarks=build(spec["BENCHMARKS_STORE"]) if "BENCHMARKS_STORE" in spec else None,
        )

    @classmethod
    def open(cls, location: str | Path) -> ResultsStore:
        """A YAML spec (``.yaml``/``.yml``) or a folder for the embedded store."""
        location = Path(location)
        if location.suffix in (".yaml", ".yml"):
            return cls.from_file(location)
        return cls.embedded(location)

    def connect(self) -> ResultsStore:
        """Open every collection, create the embedded ones' tables, and make sure the candidate
        indexes exist."""
        serialise_monty_connect()  # threads of a worker, processes of `benchmark --jobs`
        self.jobs.connect()
        self.campaigns.connect()
        self.candidates.connect()
        self.benchmarks.connect()
        for store in (self.jobs.docs_store, *self.jobs.additional_stores.values()):
            _create_table(store)
        _create_table(self.campaigns)
        _create_table(self.candidates)
        _create_table(self.benchmarks)
        for field_name in CANDIDATE_INDEXES:
            try:
                self.candidates.ensure_index(field_name)
            except NotImplementedError:
                # MontyDB (the embedded store) has no secondary indexes; MongoDB builds them.
                break
        return self

    def close(self) -> None:
        for store in (self.jobs, self.campaigns, self.candidates, self.benchmarks):
            store.close()

    # --- documents --------------------------------------------------------------------------
    def save_campaign(self, document: dict[str, Any]) -> None:
        self.campaigns.update([document], key="campaign_id")

    def save_candidates(self, documents: list[dict[str, Any]]) -> None:
        """Upsert by (campaign, candidate): a rerun replaces, never duplicates."""
        for document in documents:
            document["candidate_key"] = f"{document['campaign_id']}/{document['candidate_id']}"
        if documents:
            self.candidates.update(documents, key="candidate_key")

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return self.campaigns.query_one({"campaign_id": campaign_id})

    def list_campaigns(self) -> list[dict[str, Any]]:
        return sorted(self.campaigns.query({}), key=lambda d: d.get("created_at", ""))

    def query_candidates(
        self,
        campaign_id: str | None = None,
        *,
        sun_only: bool = False,
        max_e_above_hull: float | None = None,
    ) -> list[dict[str, Any]]:
        """Candidates matching the filters, lowest E_hull first (unscored last)."""
        criteria: dict[str, Any] = {}
        if campaign_id:
            criteria["campaign_id"] = campaign_id
        if sun_only:
            criteria["sun"] = True
        if max_e_above_hull is not None:
            criteria["e_above_hull"] = {"$lte": max_e_above_hull}
        documents = list(self.candidates.query(criteria))
        for document in documents:
            document.pop("_id", None)
        return sorted(
            documents,
            key=lambda d: (d.get("e_above_hull") is None, d.get("e_above_hull") or 0.0),
        )

    def save_benchmark(self, document: dict[str, Any]) -> None:
        """Upsert a benchmark document by ``benchmark_id``."""
        self.benchmarks.update([document], key="benchmark_id")

    def benchmark(self, benchmark_id: str) -> dict[str, Any] | None:
        document = self.benchmarks.query_one({"benchmark_id": benchmark_id})
        if document:
            document.pop("_id", None)
        return document

    def candidate(self, candidate_key: str) -> dict[str, Any] | None:
        """One candidate by ``campaign/candidate`` key or by bare candidate id."""
        document = self.candidates.query_one({"candidate_key": candidate_key})
        return document or self.candidates.query_one({"candidate_id": candidate_key})
