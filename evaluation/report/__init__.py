"""``crystalforge evaluate``: the evaluation of a set of crystals (:mod:`.evaluate`) and the
tables, summary and files it writes (:mod:`.tables`)."""
