"""What every DFT engine returns for one structure, whatever code computed it.

An engine (``gpaw``, ``vasp``) builds a jobflow graph of atomate2 task makers for one
structure and ends it with a *summary* job whose output is a :class:`DFTResult` dict. The
campaign's final stage, the ``crystalforge dft run`` command and the DFT hull all read only
this schema, so engines are interchangeable. Energies are eV/atom, moduli GPa, gaps eV.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: The tasks a DFT run may be asked for, in the order they run.
DFT_TASKS = ("relax", "static", "band_gap", "elastic")

#: Campaign properties (``--properties``) and the tasks that compute them.
PROPERTY_TASKS = {"band_gap": "band_gap", "bulk_modulus": "elastic"}


class DFTUnavailable(RuntimeError):  # noqa: N818 (like MLFFUnavailable)
    """The DFT code of an engine is not installed or not configured (one-line message)."""


class DFTTaskError(RuntimeError):
    """A DFT task that failed for good (after any retries with safer settings)."""


class TaskOutcome(BaseModel):
    """How one task of a DFT run went."""

    status: Literal["ok", "failed", "skipped"] = "skipped"
    reason: str = ""
    seconds: float | None = None
    attempts: list[str] = Field(
        default_factory=list, description="settings tried, in order (retries with safer ones)"
    )


class ElasticResult(BaseModel):
    """The fitted elastic tensor and its aggregate moduli."""

    k_vrh: float | None = Field(None, description="Voigt-Reuss-Hill bulk modulus (GPa)")
    g_vrh: float | None = Field(None, description="Voigt-Reuss-Hill shear modulus (GPa)")
    elastic_tensor: list[list[float]] | None = Field(
        None, description="6x6 Voigt elastic tensor (GPa, IEEE standard orientation)"
    )
    n_deformations: int = 0


class DFTResult(BaseModel):
    """One structure's DFT run: the relaxed structure, its energy and the properties asked for.

    ``status`` is ``ok`` when every requested task finished, ``partial`` when the energy is
    known but a property task failed, and ``failed`` when no energy could be computed.
    """

    engine: str
    level_of_theory: str = Field(description="e.g. 'dft:gpaw-pbe-pw520'; hulls never mix levels")
    status: Literal["ok", "partial", "failed"]
    reason: str = ""
    structure: dict[str, Any] | None = Field(None, description="relaxed Structure.as_dict()")
    energy_per_atom: float | None = Field(
        None, description="static energy at the relaxed geometry (corrected where the level is)"
    )
    uncorrected_energy_per_atom: float | None = None
    band_gap: float | None = None
    is_gap_direct: bool | None = None
    elastic: ElasticResult | None = None
    tasks: dict[str, TaskOutcome] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict, description="the input set used")

    @property
    def seconds(self) -> float:
        """Wall time summed over the tasks that ran."""
        return sum(t.seconds or 0.0 for t in self.tasks.values())


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validated DFT tasks in run order; ``static`` needs ``relax`` unless given alone.

    Raises
    ------
    ValueError
        For an unknown task name, or an empty list.
    """
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(DFT_TASKS))
    if unknown:
        raise ValueError(f"unknown DFT task(s) {unknown}; choose from {list(DFT_TASKS)}")
    if not names:
        raise ValueError(f"no DFT task given; choose from {list(DFT_TASKS)}")
    return tuple(t for t in DFT_TASKS if t in names)


def properties_to_tasks(properties: str | list[str] | None) -> tuple[str, ...]:
    """The DFT tasks a campaign runs: relax + static, plus one task per requested property.

    Raises
    ------
    ValueError
        For an unknown property.
    """
    names = properties.split(",") if isinstance(properties, str) else list(properties or [])
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(PROPERTY_TASKS))
    if unknown:
        raise ValueError(f"unknown propert(ies) {unknown}; choose from {sorted(PROPERTY_TASKS)}")
    return parse_tasks(["relax", "static", *(PROPERTY_TASKS[n] for n in names)])


def run_past_failures(run: Any) -> Any:
    """Let every job of one structure's DFT graph run after a failed parent, under FireWorks.

    FireWorks leaves the child of a FIZZLED Firework WAITING forever unless it allows fizzled
    parents, so one failed relaxation would stall a whole campaign there (``run_locally``
    skips such children itself). Allowed, a child that needs the failed output cannot resolve
    it and fizzles at once, recorded; the summary (``OnMissing.NONE``) then records the
    failure for this structure and the campaign goes on. ``run`` is a jobflow Flow or Job.

    The job that creates ``run`` at run time must not pass its own manager config on
    (``config.pass_manager_config = False``): jobflow would replace this setting with it.
    """
    run.update_config({"_set": {"manager_config->_allow_fizzled_parents": True}}, dict_mod=True)
    return run
