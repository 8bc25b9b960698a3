"""Property targets under a budget of property calculations (preprint Section 2.5, Fig. 5g–h).

Three ways of finding structures whose property meets a constraint (e.g. bulk modulus >= 400
GPa), each spending at most ``B`` property calculations at the labels' level of theory:

* ``mattergen``: samples conditioned on the constraint, relaxed and kept when S.U.N.; ``B`` of
  them, in a seeded random order (the paper sub-samples at random), get the property computed;
* ``screening``: the unlabelled structures of the fine-tuning data ranked by a property
  predictor; the top ``B`` get the property computed;
* ``labelled data``: the labelled structures that already meet it (no budget).

The predictor (:class:`CompositionRidge`) is the screening baseline's: a ridge regression on
composition and density descriptors, fitted on the labelled structures, its 5-fold
cross-validated error reported with the results. (The paper's is a GemNet regressor, which it
also uses to label MatterGen's fine-tuning data.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element, Structure

#: Elemental properties whose fraction-weighted mean, minimum and maximum describe a crystal.
_ELEMENT_PROPERTIES = ("Z", "X", "row", "group", "atomic_radius", "atomic_mass", "melting_point")


def _element_value(symbol: str, name: str) -> float:
    value = getattr(Element(symbol), name, None)
    try:
        return float(value) if value is not None and math.isfinite(float(value)) else 0.0
    except (TypeError, ValueError):
        return 0.0


def descriptors(structure: Structure) -> np.ndarray:
    """Composition statistics of :data:`_ELEMENT_PROPERTIES`, volume per atom, density and the
    number of elements of one crystal."""
    composition = structure.composition
    fractions = np.array([composition.get_atomic_fraction(el) for el in composition.elements])
    features = []
    for name in _ELEMENT_PROPERTIES:
        values = np.array([_element_value(el.symbol, name) for el in composition.elements])
        features += [float(fractions @ values), float(values.min()), float(values.max())]
    features += [structure.volume / len(structure), float(structure.density), len(fractions)]
    return np.array(features)


@dataclass
class CompositionRidge:
    """Ridge regression on standardised :func:`descriptors` (closed form)."""

    alpha: float = 1.0
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    weights: np.ndarray | None = None
    intercept: float = 0.0

    def fit(self, features: np.ndarray, targets: np.ndarray) -> CompositionRidge:
        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0) + 1e-12
        x = (features - self.mean) / self.scale
        self.intercept = float(targets.mean())
        gram = x.T @ x + self.alpha * np.eye(x.shape[1])
        self.weights = np.linalg.solve(gram, x.T @ (targets - self.intercept))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise ValueError("the predictor is not fitted")
        return ((features - self.mean) / self.scale) @ self.weights + self.intercept


def cross_validated(
    features: np.ndarray, targets: np.ndarray, alphas: Sequence[float] = (0.1, 1, 10, 100)
) -> tuple[CompositionRidge, dict[str, float]]:
    """The ridge with the best 5-fold MAE among ``alphas``, refitted on everything, and its
    cross-validated MAE and Spearman rank correlation."""
    from scipy.stats import spearmanr

    folds = np.arange(len(targets)) % 5
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        predicted = np.empty_like(targets, dtype=float)
        for fold in range(5):
            test = folds == fold
            model = CompositionRidge(alpha).fit(features[~test], targets[~test])
            predicted[test] = model.predict(features[test])
        mae = float(np.abs(predicted - targets).mean())
        if best is None or mae < best[0]:
            best = (mae, alpha, predicted)
    mae, alpha, predicted = best
    rho = float(spearmanr(predicted, targets).statistic)
    quality = {"cv_mae": mae, "cv_spearman": rho, "alpha": alpha, "n_train": len(targets)}
    return CompositionRidge(alpha).fit(features, targets), quality


def hits_by_budget(
    values: Sequence[float | None],
    threshold: float,
    ceiling: float,
    budgets: Sequence[int],
) -> dict[str, dict[str, int]]:
    """How many of the first ``B`` computed values meet ``threshold <= value <= ceiling``
    (``outliers``: above ``ceiling``), for each budget; a budget beyond the pool spends only
    the pool (``spent``)."""
    out = {}
    for budget in budgets:
        spent = [v for v in values[:budget] if v is not None]
        out[str(budget)] = {
            "hits": sum(threshold <= v <= ceiling for v in spent),
            "outliers": sum(v > ceiling for v in spent),
            "spent": len(values[:budget]),
        }
    return out


def markdown(document: dict[str, Any]) -> str:
    """Fig. 5g–h as a table: hits per budget for each method."""
    name, threshold = document["property"], document["threshold"]
    budgets = [str(b) for b in document["budgets"]]
    lines = [
        f"# Property benchmark: {name} >= {threshold} ({document['level_of_theory']})",
        "",
        document["protocol"],
        "",
        "| method | " + " | ".join(f"B = {b}" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    fully_labelled = document["methods"]["screening"]["n_pool"] == 0
    for method in ("mattergen", "screening"):
        row = document["methods"][method]["hits"]
        if method == "screening" and fully_labelled:
            lines.append("| screening | " + " | ".join("–" for _ in budgets) + " |")
            continue
        cells = [
            str(row[b]["hits"])
            + (f" (pool of {row[b]['spent']})" if row[b]["spent"] < int(b) else "")
            for b in budgets
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    labelled = document["methods"]["labelled data"]
    lines.append("| labelled data | " + " | ".join(str(labelled["hits"]) for _ in budgets) + " |")
    details = document["methods"]
    quality = details["screening"]["quality"]
    screening = (
        "- Screening: none. Every structure of the fine-tuning data is labelled, so there is "
        "nothing to screen (the paper's Fig. 5g has no screening baseline for the same reason)."
        if fully_labelled
        else f"- Screening: {details['screening']['n_pool']} unlabelled structures ranked by "
        f"{details['screening']['predictor']} (5-fold MAE {quality['cv_mae']:.3g}, Spearman "
        f"{quality['cv_spearman']:.2f}); they are known structures of the training data, so "
        "none of them is novel."
    )
    lines += [
        "",
        f"- MatterGen: {details['mattergen']['n_samples']} samples conditioned on "
        f"`{name}>={threshold}` ({details['mattergen']['checkpoint']}), "
        f"{details['mattergen']['n_sun']} S.U.N. after CHGNet relaxation "
        f"({details['mattergen']['hull']}).",
        screening,
        f"- Labelled data: {labelled['hits']} of {labelled['n_labelled']} labels meet the "
        f"constraint ({labelled.get('outliers', 0)} outliers above the plausible maximum).",
    ]
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> list[Path]:
    """Fig. 5g–h: structures meeting the constraint against the calculation budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluation.discovery.report import COLOURS, save_figure

    budgets = document["budgets"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    methods = [("mattergen", "MatterGen (S.U.N.)"), ("screening", "screening")]
    if document["methods"]["screening"]["n_pool"] == 0:  # fully labelled: nothing to screen
        methods = methods[:1]
    for method, label in methods:
        hits = [document["methods"][method]["hits"][str(b)]["hits"] for b in budgets]
        ax.plot(budgets, hits, marker="o", label=label, color=COLOURS.get(method, "#ff7f0e"))
    labelled = document["methods"]["labelled data"]["hits"]
    ax.axhline(labelled, color=COLOURS["reference"], ls="--", label="labelled data")
    ax.set_xlabel("property calculations (budget)")
    ax.set_ylabel(f"structures with {document['property']} >= {document['threshold']}")
    ax.set_title(f"{document['property']} ({document['level_of_theory']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
