"""The DFT stage: GPAW (runs anywhere) and VASP (HPC sites) through atomate2's makers.

:func:`tasks_maker` is the one place an engine name becomes a maker; :func:`check_engine`
fails fast, in one line, when that engine's code cannot run on this machine.
"""

from __future__ import annotations

from typing import Any

from jobflow import Maker

DFT_ENGINES = ("gpaw", "vasp")


def tasks_maker(
    engine: str, tasks: tuple[str, ...], settings: dict[str, Any] | None = None
) -> Maker:
    """The maker that runs ``tasks`` on one structure with ``engine``.

    ``settings`` overrides the GPAW input set (:class:`~flows.dft.gpaw_settings.GpawInputSet`);
    VASP takes its settings from MP's input sets and accepts none here.

    Raises
    ------
    ValueError
        For an unknown engine or task, VASP settings, or invalid GPAW settings.
    """
    from flows.dft.schema import parse_tasks

    tasks = parse_tasks(tasks)
    if engine == "gpaw":
        from flows.dft.gpaw_run import GpawTasksMaker
        from flows.dft.gpaw_settings import GpawInputSet

        return GpawTasksMaker(tasks=tasks, settings=GpawInputSet(**(settings or {})))
    if engine == "vasp":
        if settings:
            raise ValueError("the vasp engine uses MP's input sets; it takes no dft settings")
        from flows.dft.vasp import VaspTasksMaker

        return VaspTasksMaker(tasks=tasks)
    raise ValueError(f"DFT engine must be one of {list(DFT_ENGINES)}, got {engine!r}")


def check_engine(engine: str) -> None:
    """Raise :class:`~flows.dft.schema.DFTUnavailable` when ``engine`` cannot run here."""
    if engine == "gpaw":
        from flows.dft.gpaw import check_gpaw

        check_gpaw()
    elif engine == "vasp":
        from flows.dft.vasp import check_vasp

        check_vasp()
