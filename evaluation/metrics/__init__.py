"""The paper's verdicts: per-structure metrics (:mod:`.structure`: validity, stability thresholds,
RMSD), S.U.N. defined once (:mod:`.sun`) and the chemistry of a set of crystals against data
(:mod:`.chemistry`)."""
