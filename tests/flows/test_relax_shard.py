"""A relaxation shard gives the same entries in one process or split over worker processes,
and how many workers ran is no part of what a campaign is."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure

from flows.contracts import Candidate, ShardOutput
from flows.relax import relax_shard, with_input_structures

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _candidates() -> list[dict]:
    crystals = [
        Structure(Lattice.cubic(a), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        for a in (2.9, 3.0, 3.1, 3.2)
    ]
    crystals.append(Structure(Lattice.cubic(3.0), ["Cu", "Au"], [[0, 0, 0], [0.01, 0, 0]]))
    generated = [Candidate(candidate_id=f"c{i}", structure=s) for i, s in enumerate(crystals)]
    return [c.model_dump() for c in with_input_structures(generated, None)]


def _run_shard(n_jobs: int) -> ShardOutput:
    shard = relax_shard(_candidates(), "chgnet", 0.1, 40, "prerelax", n_jobs=n_jobs)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    responses = run_locally(shard, store=store, log=False, ensure_success=True)
    return ShardOutput.model_validate(responses[shard.uuid][1].output)


def test_a_shard_split_over_two_workers_gives_the_entries_of_one_process():
    alone, split = _run_shard(1), _run_shard(2)
    assert [e.candidate_id for e in split.results] == ["c0", "c1", "c2", "c3", "c4"]
    assert [e.status for e in split.results] == [e.status for e in alone.results]
    assert split.results[-1].status == "failed"  # atoms 0.03 Å apart: that candidate only
    for one, two in zip(alone.results[:4], split.results[:4], strict=True):
        assert two.energy_per_atom == pytest.approx(one.energy_per_atom, abs=1e-5)
        assert two.n_steps == one.n_steps
    assert set(split.trajectories) == {"c0", "c1", "c2", "c3", "c4"}


def test_relax_jobs_is_not_part_of_a_campaign_s_settings_or_id():
    from pipeline.campaign import CampaignConfig, default_campaign_id

    one, two = CampaignConfig(), CampaignConfig(relax_jobs=2)
    assert "relax_jobs" not in two.model_dump()
    assert default_campaign_id("Li-O", one) == default_campaign_id("Li-O", two)
    assert two.maker().prerelax.n_jobs == 2 and two.maker().final.n_jobs == 2
    with pytest.raises(ValueError, match="relax_jobs"):
        CampaignConfig(relax_jobs=0)


def test_settings_added_later_keep_the_ids_of_campaigns_stored_before_them():
    """Ids computed by the code before ``rss_minsep``, ``substitution_mode`` and
    ``substitution_max_sites`` existed."""
    from pipeline.campaign import CampaignConfig, default_campaign_id

    assert default_campaign_id("Li-Co-O", CampaignConfig()) == "Li-Co-O-rss-c081787b"
    config = CampaignConfig(generator="substitution", num_candidates=16, top_k=4)
    assert default_campaign_id("Li-Co-O", config) == "Li-Co-O-substitution-a08730ae"
    tuned = CampaignConfig(rss_minsep={"Li-O": 1.9})
    assert default_campaign_id("Li-Co-O", tuned) != "Li-Co-O-rss-c081787b"
    small = config.model_copy(update={"substitution_max_sites": 20})
    assert default_campaign_id("Li-Co-O", small) != "Li-Co-O-substitution-a08730ae"
