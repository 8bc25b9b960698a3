"""``crystalforge dft run``: DFT tasks on the structures of one file, outside any campaign.

The tasks run as the same jobflow graph a campaign's DFT stage uses (atomate2 makers ending
in a :class:`~flows.dft.schema.DFTResult`), executed in-process on a memory store.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.common import bad_input_errors, fail, read_input

dft_app = typer.Typer(
    help="Run DFT (GPAW or VASP) on crystal files.", no_args_is_help=True, rich_markup_mode=None
)


class DFTEngine(StrEnum):
    gpaw = "gpaw"
    vasp = "vasp"


class DFTOutputFormat(StrEnum):
    text = "text"
    json = "json"


def run_dft(structure, maker) -> dict[str, Any]:
    """Run ``maker``'s graph on ``structure`` in-process; the DFTResult dict.

    The elastic task is a whole atomate2 flow, so its seconds are the run's wall time minus
    the other tasks' (``elastic_seconds_from_wall`` in the result says so).
    """
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    flow = maker.make(structure)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    started = time.perf_counter()
    responses = run_locally(flow, store=store, log=False, ensure_success=False)
    wall = time.perf_counter() - started
    uuid = flow.output.uuid
    result = responses[uuid][max(responses[uuid])].output if uuid in responses else None
    if result is None:
        return {"status": "failed", "reason": "the DFT summary job did not run", "wall": wall}
    elastic = result["tasks"].get("elastic")
    if elastic and elastic["status"] == "ok" and elastic["seconds"] is None:
        others = sum(t["seconds"] or 0.0 for n, t in result["tasks"].items() if n != "elastic")
        elastic["seconds"] = max(wall - others, 0.0)
        result["elastic_seconds_from_wall"] = True
    result["wall"] = wall
    return result


def _text(label: str, result: dict[str, Any]) -> str:
    lines = [
        f"{label}: {result['status']}" + (f" ({result['reason']})" if result["reason"] else "")
    ]
    lines.append(f"  level of theory      {result.get('level_of_theory', '')}")
    if result.get("energy_per_atom") is not None:
        lines.append(f"  energy               {result['energy_per_atom']:.5f} eV/atom")
    if result.get("structure"):
        from pymatgen.core import Structure

        relaxed = Structure.from_dict(result["structure"])
        lines.append(
            f"  relaxed cell         {relaxed.composition.reduced_formula}, "
            f"a b c = {' '.join(f'{x:.4f}' for x in relaxed.lattice.abc)} Å, "
            f"{relaxed.volume / len(relaxed):.3f} Å^3/atom"
        )
    if result.get("band_gap") is not None:
        kind = "direct" if result["is_gap_direct"] else "indirect"
        lines.append(f"  band gap             {result['band_gap']:.3f} eV ({kind})")
    elastic = result.get("elastic")
    if elastic and elastic.get("k_vrh") is not None:
        lines.append(f"  K_VRH / G_VRH        {elastic['k_vrh']:.1f} / {elastic['g_vrh']:.1f} GPa")
        lines.append("  elastic tensor (GPa, Voigt, IEEE):")
        lines += ["    " + " ".join(f"{c:8.1f}" for c in row) for row in elastic["elastic_tensor"]]
    for name, task in result["tasks"].items():
        seconds = f"{task['seconds']:.1f} s" if task["seconds"] is not None else "-"
        retries = f", {len(task['attempts'])} attempts" if len(task["attempts"]) > 1 else ""
        lines.append(f"  {name:<20} {task['status']:<8} {seconds}{retries}")
    return "\n".join(lines)


@dft_app.command("run")
def dft_run(
    structure_file: Annotated[Path, typer.Argument(help="CIF, POSCAR, extxyz or JSON crystals.")],
    engine: Annotated[DFTEngine, typer.Option(help="DFT code.")] = DFTEngine.gpaw,
    tasks: Annotated[
        str, typer.Option(help="Comma-separated: relax,static,band_gap,elastic.")
    ] = "relax,static",
    settings: Annotated[
        Path | None, typer.Option(help="YAML of GPAW input-set overrides (ecut, kpoint_density…).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Folder for result.json and the relaxed CIF(s).")
    ] = None,
    output_format: Annotated[DFTOutputFormat, typer.Option("--format")] = DFTOutputFormat.text,
) -> None:
    """Relax, static, band gap and elastic tensor (K_VRH, G_VRH) with GPAW or VASP."""
    import yaml
    from pydantic import ValidationError

    from flows.dft import check_engine, tasks_maker

    try:
        overrides = yaml.safe_load(settings.read_text()) if settings else None
        maker = tasks_maker(engine.value, tuple(tasks.split(",")), overrides)
    except (OSError, yaml.YAMLError, ValueError, ValidationError) as error:
        raise fail(str(error).splitlines()[0]) from None
    try:
        check_engine(engine.value)
        records = read_input(structure_file).records
    except bad_input_errors() as error:
        raise fail(str(error)) from None
    results = {}
    for record in records:
        result = run_dft(record.structure, maker)
        results[record.label] = result
        if output_format is DFTOutputFormat.text:
            typer.echo(_text(record.label, result))
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        tmp = output / "result.json.tmp"
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(output / "result.json")
        from pymatgen.core import Structure

        for label, result in results.items():
            if result.get("structure"):
                name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
                Structure.from_dict(result["structure"]).to(str(output / f"{name}-relaxed.cif"))
    if output_format is DFTOutputFormat.json:
        typer.echo(json.dumps(results, indent=1))
    if any(r["status"] == "failed" for r in results.values()):
        raise typer.Exit(code=1)
