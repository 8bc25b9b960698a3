"""Baseline crystal generators of the paper, as pure functions (no jobflow).

* :func:`generate_rss` — random structure search, AIRSS style, on pyxtal;
* :func:`generate_substitutions` — data-mined ion substitution (Hautier et al. 2011) over the
  shipped prototypes and the reference set.

Both take a chemical system (``"Li-Co-O"``, parsed by :func:`parse_chemsys`) and return
:class:`evaluation.records.CrystalRecord` objects whose ``properties`` hold their provenance.
"""

from flows.generators.chemsys import MAX_ELEMENTS, parse_chemsys, require_arity
from flows.generators.rss import (
    ATOM_COUNT_RANGES,
    RSSResult,
    atom_count_ranges,
    generate_rss,
    point_group_order,
    space_groups_with_symmops,
    tuned_minsep,
)
from flows.generators.substitution import (
    LAMBDA_TABLE_FILE,
    PROTOTYPES_FILE,
    generate_substitutions,
    load_lambda_table,
    load_prototypes,
    substitution_probability,
)

__all__ = [
    "ATOM_COUNT_RANGES",
    "LAMBDA_TABLE_FILE",
    "MAX_ELEMENTS",
    "PROTOTYPES_FILE",
    "RSSResult",
    "atom_count_ranges",
    "generate_rss",
    "generate_substitutions",
    "load_lambda_table",
    "load_prototypes",
    "parse_chemsys",
    "point_group_order",
    "require_arity",
    "space_groups_with_symmops",
    "substitution_probability",
    "tuned_minsep",
]
