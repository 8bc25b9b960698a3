"""Reading atomate2 task documents, which reach a summary job as objects or as plain dicts
(depending on the store and the manager), the same way for every engine."""

from __future__ import annotations

from typing import Any

from pymatgen.core import Structure

from flows.dft.schema import ElasticResult


def field_of(document: Any, *path: str | int) -> Any:
    """``document.a[0].b`` for a document that may arrive as an object or a plain dict."""
    value = document
    for key in path:
        if value is None:
            return None
        if isinstance(key, int):
            value = value[key] if isinstance(value, list | tuple) and len(value) > key else None
        else:
            value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return value


def structure_of(document: Any) -> Structure | None:
    """The ``structure`` of a task document, as a Structure."""
    value = field_of(document, "structure")
    return Structure.from_dict(value) if isinstance(value, dict) else value


def elastic_result(document: Any) -> ElasticResult | None:
    """The moduli and IEEE tensor of an atomate2 ``ElasticDocument`` (``None`` if unfitted)."""
    tensor = field_of(document, "elastic_tensor", "ieee_format")
    if tensor is None:
        return None
    return ElasticResult(
        k_vrh=field_of(document, "derived_properties", "k_vrh"),
        g_vrh=field_of(document, "derived_properties", "g_vrh"),
        elastic_tensor=[[float(x) for x in row] for row in tensor],
        n_deformations=len(field_of(document, "fitting_data", "deformations") or []),
    )
