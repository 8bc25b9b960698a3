"""The model as a campaign generator: the Maker, its campaign settings and its GPU category."""

from __future__ import annotations

import numpy as np
import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pydantic import ValidationError
from pymatgen.core import Structure
from typer.testing import CliRunner

from flows.campaign import CampaignMaker
from flows.generate import GENERATORS, MatterGenGeneratorMaker, RSSGeneratorMaker
from flows.generators.mattergen import batch_seed, generate_structures, parse_elements
from pipeline.campaign import CampaignConfig
from pipeline.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_the_maker_samples_candidates_in_the_chemical_system(tiny_checkpoint):
    maker = MatterGenGeneratorMaker(checkpoint=str(tiny_checkpoint), num_steps=12, seed=4)
    job = maker.make("Li-O", 5)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(job, store=store, ensure_success=True, log=False)
    candidates = store.get_output(job.uuid, load=True)  # what later jobs see: through the store
    assert 3 <= len(candidates) <= 5
    for candidate in candidates:
        structure = Structure.from_dict(candidate["structure"])
        assert {el.symbol for el in structure.composition} <= {"Li", "O"}
        provenance = candidate["provenance"]
        assert provenance["generator"] == "mattergen"
        assert provenance["checkpoint"] == str(tiny_checkpoint)
        assert provenance["seed"] == 4 and provenance["steps"] == 12
        assert candidate["candidate_id"] == f"mattergen-4-{provenance['index']}"
    assert len({c["candidate_id"] for c in candidates}) == len(candidates)


def test_the_maker_is_registered_and_serialisable():
    assert GENERATORS["mattergen"] is MatterGenGeneratorMaker
    maker = MatterGenGeneratorMaker(checkpoint="model.pt", num_steps=50, batch_size=8)
    assert maker.category == "gpu"
    again = MatterGenGeneratorMaker.from_dict(maker.as_dict())  # FireWorks ships it as JSON
    assert again == maker


def test_generate_structures_is_reproducible_and_seeds_batches_apart(tiny_checkpoint):
    kwargs = {"num_atoms": 6, "num_steps": 10, "batch_size": 2, "seed": 9}
    first = generate_structures(tiny_checkpoint, 4, **kwargs)
    second = generate_structures(tiny_checkpoint, 4, **kwargs)
    assert [r.id for r in first.records] == [r.id for r in second.records]
    for a, b in zip(first.records, second.records, strict=True):
        assert np.allclose(a.structure.cart_coords, b.structure.cart_coords)
    assert first.num_steps == 10 and first.num_requested == 4
    assert len(first.records) + first.num_dropped == 4
    assert len({batch_seed(9, b) for b in range(100)} | {batch_seed(10, 0)}) == 101


def test_parse_elements_accepts_commas_or_dashes_and_names_the_bad_token():
    assert parse_elements("O, Li,Co") == ("Co", "Li", "O")
    assert parse_elements("Li-O") == ("Li", "O")
    with pytest.raises(ValueError, match="unknown element 'Qq' in 'Li,Qq'"):
        parse_elements("Li,Qq")
    with pytest.raises(ValueError, match="Z = 100"):
        parse_elements("Li,Og")


# ------------------------------------------------------------------------------ campaign


def test_campaign_config_defaults_mattergen_to_the_shipped_checkpoint():
    generator = CampaignConfig(generator="mattergen").maker().generator
    assert generator.checkpoint == ""  # resolved to the shipped checkpoint on the worker
    with pytest.raises(ValidationError, match="model_steps"):
        CampaignConfig(generator="mattergen", checkpoint="m.pt", model_steps=0)
    config = CampaignConfig(generator="mattergen", checkpoint="m.pt", model_steps=100, seed=3)
    generator = config.maker().generator
    assert isinstance(generator, MatterGenGeneratorMaker)
    assert (generator.checkpoint, generator.num_steps, generator.seed) == ("m.pt", 100, 3)


def test_the_generate_job_of_a_mattergen_campaign_goes_to_gpu_workers():
    from jobflow.managers.fireworks import flow_to_workflow

    config = CampaignConfig(generator="mattergen", checkpoint="m.pt", num_candidates=8, top_k=2)
    flow = config.maker().make("Li-O", "lio-1")
    generate = next(job for job in flow.jobs if job.name == "generate")
    assert generate.config.manager_config == {"_category": "gpu"}
    others = [job for job in flow.jobs if job.name != "generate"]
    assert all("_category" not in job.config.manager_config for job in others)
    workflow = flow_to_workflow(flow)
    categories = {fw.name: fw.spec.get("_category") for fw in workflow.fws}
    assert categories["generate"] == "gpu"

    rss = CampaignMaker(generator=RSSGeneratorMaker(), n_candidates=8, top_k=2)
    rss_generate = next(job for job in rss.make("Li-O", "lio-2").jobs if job.name == "generate")
    assert "_category" not in rss_generate.config.manager_config


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "shipped.pt"),
        (["--checkpoint", "nowhere.pt"], "nowhere.pt"),
        (["--checkpoint", "m.pt", "--model-steps", "0"], "model-steps"),
    ],
)
def test_campaign_run_with_mattergen_checks_the_checkpoint_first(
    tmp_path, extra, expected, monkeypatch
):
    monkeypatch.setenv("CRYSTALFORGE_CHECKPOINT", str(tmp_path / "shipped.pt"))  # absent
    args = ["campaign", "run", "Li-O", "--generator", "mattergen", "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------- conditioned campaign generator


@pytest.fixture(scope="module")
def chemsys_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny model fine-tuned for 2 steps on chemical_system and energy_above_hull."""
    import torch

    from model.data import CrystalTensors
    from model.finetune import FinetuneSettings, PropertyLabels, finetune
    from model.properties import PropertyKind, PropertySpec

    data = CrystalTensors(
        atomic_numbers=torch.tensor([3, 8, 3, 3, 8, 8]),
        frac_coords=torch.rand(6, 3, generator=torch.Generator().manual_seed(0)),
        lattice=torch.diag_embed(torch.full((2, 3), 4.0)),
        num_atoms=torch.tensor([2, 4]),
        ids=["a", "b"],
    )
    labels = [
        PropertyLabels(
            PropertySpec("chemical_system", PropertyKind.chemical_system), [frozenset({3, 8})] * 2
        ),
        PropertyLabels(
            PropertySpec("energy_above_hull", PropertyKind.scalar, std=0.02, high=0.1), [0.0, 0.05]
        ),
    ]
    out = tmp_path_factory.mktemp("chemsys-ft")
    settings = FinetuneSettings(batch_size=2, max_steps=2, validate_every=2, checkpoint_every=2)
    return finetune(
        tiny_checkpoint, data, labels, out, settings, log=lambda _: None
    ).last_checkpoint


def test_a_campaign_conditions_a_chemical_system_checkpoint_on_its_system_and_the_hull(
    chemsys_checkpoint,
):
    from flows.generate import chemical_system_conditions

    checkpoint, conditions = chemical_system_conditions(str(chemsys_checkpoint), "Li-O")
    assert checkpoint == str(chemsys_checkpoint)
    assert conditions == {"chemical_system": "Li-O", "energy_above_hull": "0"}  # paper D.4
    maker = MatterGenGeneratorMaker(checkpoint=str(chemsys_checkpoint), num_steps=6, seed=1)
    job = maker.make("Li-O", 3)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    run_locally(job, store=store, ensure_success=True, log=False)
    candidates = store.get_output(job.uuid, load=True)
    assert candidates
    for candidate in candidates:
        provenance = candidate["provenance"]
        assert provenance["conditions"] == conditions and provenance["guidance"] == 2.0
        assert provenance["element_mask"] is True
        assert {el.symbol for el in Structure.from_dict(candidate["structure"]).composition} <= {
            "Li",
            "O",
        }


def test_an_unconditional_checkpoint_gets_no_conditions(tiny_checkpoint):
    from flows.generate import chemical_system_conditions

    assert chemical_system_conditions(str(tiny_checkpoint), "Li-O") == (str(tiny_checkpoint), {})


def test_with_no_checkpoint_named_the_shipped_chemical_system_model_is_picked(
    chemsys_checkpoint, tmp_path, monkeypatch
):
    import shutil

    from flows.generate import chemical_system_conditions
    from flows.generators.mattergen import checkpoint_for

    shipped = tmp_path / "data" / "checkpoints"
    shipped.mkdir(parents=True)
    monkeypatch.setenv("CRYSTALFORGE_DATA", str(tmp_path / "data"))
    assert chemical_system_conditions("", "Li-O") == ("", {})  # none ships: unconditional
    shutil.copy(chemsys_checkpoint, shipped / "tuned.pt")
    checkpoint, conditions = chemical_system_conditions("", "Li-O")
    assert checkpoint == str(shipped / "tuned.pt") and "chemical_system" in conditions
    assert checkpoint_for(frozenset({"chemical_system"})) == shipped / "tuned.pt"
    with pytest.raises(ValueError, match="no shipped checkpoint is fine-tuned on band_gap"):
        checkpoint_for(frozenset({"band_gap"}))
