"""The model's commands: ``crystalforge data tensors``, ``data build``, ``data labels``,
``train`` and ``generate`` (added to the app and its ``data`` group by :mod:`pipeline.cli.app`).

Bad input (config, data, checkpoint, device, paths) becomes one line on stderr and exit code 2;
checkpoints, tensor files and sample files are written atomically, so a failure never leaves a
half-written file in place of a good one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import (
    DeviceOption,
    ExcludeSystemsOption,
    bad_input_errors,
    chosen_device,
    fail,
    held_out,
    read_input,
    run_and_report,
)

if TYPE_CHECKING:
    from evaluation.records import ReadResult
    from model.data import CrystalTensors


def _read(path: Path) -> ReadResult:
    """Crystals from ``path``; unreadable input exits 2."""
    try:
        return read_input(path)
    except bad_input_errors() as error:
        raise fail(str(error)) from None


def _to_tensors(path: Path, max_atoms: int) -> CrystalTensors:
    """Read crystals in any supported format and turn them into training tensors."""
    from model.structures import structures_to_tensors

    result = _read(path)
    try:
        build = structures_to_tensors(
            ((record.label, record.structure) for record in result.records),
            max_atoms=max_atoms,
            source=str(path),
        )
    except ValueError as error:
        raise fail(f"{path}: {error}") from None
    skipped = sum(len(ids) for ids in build.skipped.values())
    typer.echo(f"kept {len(build.tensors)} crystals (at most {max_atoms} atoms), skipped {skipped}")
    for reason, ids in sorted(build.skipped.items()):
        typer.echo(f"  skipped {len(ids):>6}  {reason}")
    return build.tensors


def data_tensors(
    source: Annotated[Path, typer.Argument(help="Input crystals (any supported format).")],
    destination: Annotated[Path, typer.Argument(help="Output tensor file (.pt).")],
    max_atoms: Annotated[
        int, typer.Option(min=1, help="Skip crystals with more atoms than this (Alex-MP-20: 20).")
    ] = 20,
) -> None:
    """Convert crystals to a training tensor file (Niggli cell, symmetric lattice form)."""
    if destination.suffix != ".pt":
        raise fail(f"the tensor file must end in .pt, got {destination}")
    if destination.is_dir():
        raise fail(f"{destination} is a folder; give a file name ending in .pt")
    tensors = _to_tensors(source, max_atoms)
    try:
        tensors.save(destination)
    except OSError as error:
        raise fail(f"cannot write {destination}: {error}") from None
    atoms = int(tensors.num_atoms.sum())
    typer.echo(f"wrote {len(tensors)} crystals ({atoms} atoms) to {destination}")


def data_build(
    sources: Annotated[
        list[Path], typer.Argument(help="Crystal sources: CSV with a cif column, CIF folders, ...")
    ],
    out: Annotated[Path, typer.Option(help="Folder for dataset.pt, labels.csv.gz, report.json.")],
    max_atoms: Annotated[int, typer.Option(min=1, help="Largest cell kept (paper: 20).")] = 20,
    model: Annotated[str, typer.Option(help="Labelling MLFF (one level of theory).")] = "chgnet",
    fmax: Annotated[float, typer.Option(min=0.0, help="Relaxation force criterion, eV/A.")] = 0.1,
    max_steps: Annotated[int, typer.Option(min=1, help="Relaxation step budget.")] = 100,
    e_hull_max: Annotated[
        float, typer.Option(help="Keep crystals with E_hull below this, eV/atom (paper: 0.1).")
    ] = 0.1,
    jobs: Annotated[int, typer.Option(min=1, help="Relaxation processes (one per core).")] = 1,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Read at most this many crystals per source.")
    ] = None,
) -> None:
    """Build the model's training set: select, relax-label with an MLFF, hull-filter, split.

    Interrupted builds resume: labels are cached in OUT/labels-cache.jsonl.
    """
    from evaluation.relax.calculators import MLFFUnavailable
    from model.structures import structures_to_tensors
    from model.training_set import BuildSettings, label_training_set, write_build

    settings = BuildSettings(
        max_atoms=max_atoms,
        model=model,
        fmax=fmax,
        max_steps=max_steps,
        e_hull_max=e_hull_max,
        n_jobs=jobs,
    )
    try:
        build = label_training_set(sources, out, settings, limit=limit)
    except (*bad_input_errors(), MLFFUnavailable, ValueError) as error:
        raise fail(str(error)) from None
    if not build.kept:
        raise fail(f"no crystal has E_hull < {e_hull_max} eV/atom; nothing to train on")
    tensors = structures_to_tensors(
        ((r.label, r.structure) for r in build.kept), max_atoms=max_atoms, source=str(out)
    ).tensors
    _, validation = tensors.split(settings.validation_fraction)
    validation_ids = {tensors.ids[i] for i in validation.tolist()}
    split_of = {i: ("val" if i in validation_ids else "train") for i in tensors.ids}
    counts = build.report["counts"]
    counts.update(training_set=len(tensors), validation=len(validation_ids))
    counts["train"] = len(tensors) - len(validation_ids)
    tensors.save(out / "dataset.pt")
    write_build(build, out, split_of)
    for name, value in counts.items():
        typer.echo(f"{name:>28}: {value}")
    typer.echo(f"wrote {out / 'dataset.pt'}, {out / 'labels.csv.gz'}, {out / 'report.json'}")


def data_labels(
    build_dir: Annotated[
        Path, typer.Argument(help="A `data build` folder (dataset.pt, labels.csv.gz, ...).")
    ],
    properties: Annotated[
        str,
        typer.Option(
            "--property",
            help="Comma-separated: chemical_system, space_group, energy_above_hull, hhi, "
            "band_gap, magnetic_density, bulk_modulus.",
        ),
    ],
    model: Annotated[
        str, typer.Option(help="MLFF of magnetic_density (CHGNet only) and bulk_modulus.")
    ] = "chgnet",
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes for the MLFF properties.")] = 1,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Compute at most this many new crystals per MLFF property (a fixed "
            "pseudo-random sample; rerun to extend it; 0: write the files from the cache).",
        ),
    ] = None,
) -> None:
    """Label every crystal of a training set with properties, for fine-tuning.

    Writes BUILD_DIR/properties.csv.gz (id + one column per property, empty = unlabelled) and
    BUILD_DIR/properties.json (unit, level of theory, source, counts). Computed labels are
    cached in BUILD_DIR/properties-cache.jsonl: an interrupted run resumes.
    """
    from tqdm.auto import tqdm

    from evaluation.relax.calculators import MLFFUnavailable
    from model.property_labels import label_properties, resolve_properties

    try:  # every check before any work or file
        names = resolve_properties(properties)
    except ValueError as error:
        raise fail(f"--property: {error}") from None
    if not build_dir.is_dir():
        raise fail(f"{build_dir}: no such build folder")
    if not (build_dir / "dataset.pt").is_file():
        raise fail(f"{build_dir}: no dataset.pt (run `crystalforge data build` first)")
    bars: dict[str, tqdm] = {}

    def progress(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, desc=name, unit="xtal", initial=done)
        else:
            bars[name].update(done - bars[name].n)
        if done >= total:
            bars[name].close()

    try:
        run = label_properties(
            build_dir, names, model=model, n_jobs=jobs, limit=limit, progress=progress
        )
    except (*bad_input_errors(), MLFFUnavailable, ValueError) as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"cannot write to {build_dir}: {error}") from None
    finally:
        for bar in bars.values():
            bar.close()
    for name, summary in run.summaries.items():
        top = next(iter(summary.reasons), "")
        how = (
            "looked up"
            if summary.origin == "lookup"
            else f"{summary.computed} computed, {summary.from_cache} cached"
        )
        typer.echo(
            f"{name:>18}: {summary.labelled} labelled, {summary.unlabelled} unlabelled "
            f"({how}, {summary.wall_s:.1f} s)" + (f"; most common gap: {top}" if top else "")
        )
    typer.echo(f"wrote {run.csv_path} and {run.json_path} ({run.n_crystals} crystals)")


def _check_resume(resume: Path, settings) -> None:
    """Fail before anything is written when ``resume`` cannot continue this config."""
    from model.checkpoint import CheckpointError, read_payload, same_architecture
    from model.config import ConfigError, ModelConfig

    try:
        stored = ModelConfig.from_dict(read_payload(resume)["config"])
    except CheckpointError as error:
        raise fail(f"--resume: {error}") from None
    except ConfigError as error:
        raise fail(f"--resume: {resume} has an unusable config: {error}") from None
    if not same_architecture(stored, settings):
        raise fail(
            f"--resume: {resume} was trained with a different architecture "
            f"({stored.name}) than --config ({settings.name})"
        )


def train(
    config: Annotated[Path, typer.Option(help="Model config YAML (configs/model/*.yaml).")],
    data: Annotated[
        Path, typer.Option(help="Tensor file (.pt, from `data tensors`) or crystals in any format.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for last.pt, best.pt and history.json.")],
    resume: Annotated[
        Path | None, typer.Option(help="Continue from this checkpoint (weights, optimiser, RNG).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop at this step (default: the config's).")
    ] = None,
    device: DeviceOption = None,
    exclude_systems: ExcludeSystemsOption = None,
) -> None:
    """Train (or resume training) the score network; writes checkpoints and history.json."""
    from model.config import ConfigError, load_model_config
    from model.data import CrystalTensors, DatasetError
    from model.train import train as run_training

    try:
        settings = load_model_config(config)
    except ConfigError as error:
        raise fail(f"--config: {error}") from None
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file, not a folder")
    if resume is None and (out / "last.pt").exists():
        raise fail(
            f"{out / 'last.pt'} exists; pass --resume {out / 'last.pt'} to continue training "
            "or choose another --out"
        )
    if resume is not None:
        _check_resume(resume, settings)
    target = chosen_device(device)
    if not data.exists():
        raise fail(f"--data: no such file or folder: {data}")
    if data.suffix == ".pt":
        try:
            tensors = CrystalTensors.load(data)
        except DatasetError as error:
            raise fail(f"--data: {error}") from None
    else:
        tensors = _to_tensors(data, settings.max_atoms)
    tensors = held_out(tensors, exclude_systems)
    typer.echo(
        f"training {settings.name} on {len(tensors)} crystals from {data} on {target}"
        + (f", resuming from {resume}" if resume else "")
    )
    run_and_report(
        lambda: run_training(
            settings,
            tensors,
            out,
            resume=resume,
            max_steps=max_steps,
            device=str(target),
            log=typer.echo,
        ),
        out,
        {
            "config": str(config),
            "model": settings.name,
            "data": str(data),
            "num_crystals": len(tensors),
            "excluded_systems": exclude_systems,
            "device": str(target),
            "resumed_from": str(resume) if resume else None,
        },
    )


def generate(
    num_samples: Annotated[int, typer.Option(min=1, help="Crystals to sample.")] = 64,
    out: Annotated[Path, typer.Option(help="Output file (.extxyz).")] = Path(
        "crystalforge-output/samples.extxyz"
    ),
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint (best.pt of `train`; default: the shipped one)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Crystals sampled together.")] = 64,
    num_atoms: Annotated[
        int | None,
        typer.Option(min=1, help="Atoms per crystal (default: drawn from the training data)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same samples (on one device).")] = 0,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Predictor steps (default: the model's).")
    ] = None,
    elements: Annotated[str | None, typer.Option(help="Only these species, e.g. Li,Co,O.")] = None,
    device: DeviceOption = None,
    condition: Annotated[
        list[str] | None,
        typer.Option(
            help="Property target, repeatable: chemical_system=Li-Co-O, space_group=225, "
            "band_gap=3.0, band_gap=2.5..3.5, bulk_modulus>=300 (a fine-tuned checkpoint; "
            "the shipped one tuned on these is found when --checkpoint is left out)."
        ),
    ] = None,
    guidance: Annotated[
        float, typer.Option(min=0.0, help="Classifier-free guidance scale (paper: 2).")
    ] = 2.0,
    composition: Annotated[
        str | None,
        typer.Option(help="Keep every sample at this cell composition, e.g. Li2CoO4."),
    ] = None,
    element_mask: Annotated[
        bool,
        typer.Option(help="With a chemical_system condition, never place another element."),
    ] = True,
    type_temperature: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Temperature of the atom-type posterior (default: the checkpoint's; "
            "1 = the paper's sampler).",
        ),
    ] = None,
) -> None:
    """Sample crystals from a trained checkpoint and write them as extxyz with provenance.

    Steer with --condition (fine-tuned checkpoints), --composition (any checkpoint) or
    --elements."""
    from evaluation.io.crystals import write_extxyz
    from flows.generators.mattergen import (
        checkpoint_for,
        checkpoint_path,
        generate_structures,
        parse_elements,
    )
    from flows.generators.steering import steering_plan
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.property_data import LabelError, split_condition

    if out.suffix.lower() not in (".extxyz", ".xyz"):
        raise fail(f"--out must end in .extxyz, got {out}")
    if out.is_dir():
        raise fail(f"--out {out} is a folder; give a file name ending in .extxyz")
    species = None
    if elements is not None:
        try:
            species = parse_elements(elements)
        except ValueError as error:
            raise fail(f"--elements: {error}") from None
    conditions: dict[str, str] = {}
    for text in condition or []:
        try:
            name, value = split_condition(text)
        except LabelError as error:
            raise fail(str(error)) from None
        if name in conditions:
            raise fail(f"--condition {name} is given twice")
        conditions[name] = value
    target = chosen_device(device)
    try:
        path = checkpoint if checkpoint else checkpoint_for(frozenset(conditions))
    except ValueError as error:
        raise fail(f"--condition: {error}") from None
    try:
        loaded = load_checkpoint(checkpoint_path(path), device=target)
    except CheckpointError as error:
        raise fail(str(error)) from None
    try:  # every steering option is checked before sampling starts
        steering_plan(loaded, conditions, composition, num_atoms, species, element_mask)
    except ValueError as error:
        message = str(error)
        if composition is not None and "--" not in message[:20]:
            message = f"--composition: {message}"
        raise fail(message) from None
    if num_atoms is not None and num_atoms > loaded.config.max_atoms:
        raise fail(
            f"--num-atoms {num_atoms}: this model was trained on cells of at most "
            f"{loaded.config.max_atoms} atoms"
        )
    seen = loaded.network.statistics.allowed_classes()
    if species and loaded.network.statistics.is_fitted:
        from pymatgen.core.periodic_table import Element

        unseen = [symbol for symbol in species if not bool(seen[Element(symbol).Z - 1])]
        if unseen:
            typer.secho(
                f"note: {', '.join(unseen)} never appeared in this model's training data",
                err=True,
                fg=typer.colors.YELLOW,
            )

    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        typer.echo(f"  sampled {done}/{total} ({elapsed:.1f} s)", err=True)

    try:
        result = generate_structures(
            loaded,
            num_samples,
            batch_size=batch_size,
            num_atoms=num_atoms,
            seed=seed,
            num_steps=steps,
            elements=species,
            device=str(target),
            progress=progress,
            conditions=conditions,
            guidance=guidance,
            composition=composition,
            element_mask=element_mask,
            type_temperature=type_temperature,
        )
    except CheckpointError as error:
        raise fail(str(error)) from None
    except ValueError as error:  # e.g. a checkpoint without an atom-count distribution
        raise fail(str(error)) from None
    if result.records:
        try:
            write_extxyz(result.records, out)
        except OSError as error:
            raise fail(f"cannot write {out}: {error}") from None
    dropped = ", ".join(f"{reason} {count}" for reason, count in sorted(result.dropped.items()))
    typer.echo(
        f"wrote {len(result.records)} samples to {out}"
        if result.records
        else f"no samples survived; {out} not written"
    )
    typer.echo(f"dropped          {result.num_dropped}" + (f" ({dropped})" if dropped else ""))
    typer.echo(f"checkpoint       {loaded.path.name}")
    if conditions:
        targets = ", ".join(  # as typed: hhi<=2000, not hhi=<=2000
            name + ("" if value.startswith(("<", ">")) else "=") + value
            for name, value in conditions.items()
        )
        typer.echo(f"conditions       {targets} (guidance {guidance:g})")
    if composition:
        typer.echo(f"composition      {composition} (atom types held fixed)")
    typer.echo(f"steps            {result.num_steps} on {result.device}")
    typer.echo(f"wall time        {result.wall_seconds:.1f} s")
    typer.echo(f"throughput       {result.samples_per_second:.3f} samples/s")
    if not result.records:
        raise typer.Exit(code=1)
