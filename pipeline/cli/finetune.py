"""``crystalforge finetune``: adapt a base checkpoint to property labels (paper B.1, D.1.2).

Every option is checked (config, base checkpoint, data, labels, output folder) before the first
step; a bad one is one line on stderr and exit code 2, and nothing is written.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import (
    DeviceOption,
    ExcludeSystemsOption,
    chosen_device,
    fail,
    held_out,
    run_and_report,
)

#: The CPU recipe (``configs/finetune/small.yaml``), found beside the model configs.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "finetune" / "small.yaml"


class Kind(StrEnum):
    scalar = "scalar"
    categorical = "categorical"


def finetune(
    data: Annotated[
        Path,
        typer.Option(
            help="A `data build` folder (dataset.pt + properties.csv.gz from `data labels`) "
            "or a tensor file (.pt)."
        ),
    ],
    property: Annotated[
        str,
        typer.Option(
            "--property",
            help="Property name(s), comma-separated: chemical_system, space_group, "
            "energy_above_hull, band_gap, ... or a custom name with --labels.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for last.pt, best.pt and history.json.")],
    base: Annotated[
        Path | None,
        typer.Option(help="Unconditional base checkpoint (default: the shipped one)."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Custom labels: a CSV of id,value (or id,<property>)."),
    ] = None,
    kind: Annotated[
        Kind | None, typer.Option(help="Kind of the custom property in --labels.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Fine-tuning config (configs/finetune/*.yaml; default: small.yaml)."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop at this step (default: the config's).")
    ] = None,
    freeze_base: Annotated[
        bool | None,
        typer.Option(help="Train the adapters only (default: the config's; paper: tune all)."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue from this fine-tuning checkpoint (last.pt).")
    ] = None,
    device: DeviceOption = None,
    exclude_systems: ExcludeSystemsOption = None,
) -> None:
    """Fine-tune a base checkpoint on property labels, for `generate --condition`."""
    from dataclasses import replace

    from evaluation.paths import default_checkpoint
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.config import ConfigError
    from model.data import CrystalTensors, DatasetError
    from model.finetune import finetune as run_finetune
    from model.finetune import load_finetune_settings
    from model.properties import PropertyKind
    from model.property_data import LabelError, load_labels

    names = [name.strip() for name in property.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise fail(f"--property {property!r}: give distinct names separated by commas")
    if kind is not None and labels is None:
        raise fail("--kind describes the property in --labels; give --labels FILE.csv too")
    try:
        settings = load_finetune_settings(config or DEFAULT_CONFIG)
    except ConfigError as error:
        raise fail(f"--config: {error}") from None
    if freeze_base is not None:
        settings = replace(settings, freeze_base=freeze_base)
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file, not a folder")
    if resume is None and (out / "last.pt").exists():
        raise fail(
            f"{out / 'last.pt'} exists; pass --resume {out / 'last.pt'} to continue "
            "or choose another --out"
        )
    if resume is not None and not resume.is_file():
        raise fail(f"--resume: no such checkpoint: {resume}")
    base_path = base or default_checkpoint()
    try:
        base_network = load_checkpoint(base_path).network
    except CheckpointError as error:
        raise fail(f"--base: {error}") from None
    if base_network.condition_dims:
        raise fail(f"--base {base_path} is already fine-tuned; start from an unconditional model")
    target = chosen_device(device)
    build_dir, tensor_file = (data, data / "dataset.pt") if data.is_dir() else (data.parent, data)
    if not tensor_file.is_file():
        raise fail(f"--data: no such tensor file: {tensor_file}")
    try:
        tensors = CrystalTensors.load(tensor_file)
    except DatasetError as error:
        raise fail(f"--data: {error}") from None
    tensors = held_out(tensors, exclude_systems)
    try:
        property_labels = load_labels(
            tensors,
            names,
            build_dir=build_dir,
            labels_file=labels,
            kind=PropertyKind(kind.value) if kind else None,
        )
    except LabelError as error:
        raise fail(str(error)) from None
    for item in property_labels:
        typer.echo(
            f"{item.spec.name:>20}: {item.spec.kind}, {item.spec.num_labels} of {len(tensors)} "
            f"crystals labelled ({item.spec.level_of_theory or 'level of theory not recorded'})"
        )
    typer.echo(
        f"fine-tuning {base_path.name} on {', '.join(names)} on {target}"
        + (f", resuming from {resume}" if resume else "")
    )
    run_and_report(
        lambda: run_finetune(
            base_path,
            tensors,
            property_labels,
            out,
            settings,
            resume=resume,
            max_steps=max_steps,
            device=str(target),
            log=typer.echo,
        ),
        out,
        {
            "base": str(base_path),
            "data": str(data),
            "properties": [item.spec.to_dict() for item in property_labels],
            "num_crystals": len(tensors),
            "excluded_systems": exclude_systems,
            "device": str(target),
            "resumed_from": str(resume) if resume else None,
        },
    )
