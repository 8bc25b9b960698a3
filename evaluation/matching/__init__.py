"""Uniqueness and novelty by structure matching: what counts as a match (:mod:`.core`), the
ordered-disordered matcher of the paper (:mod:`.disorder`), the on-disk reference store
(:mod:`.store`) and the index that answers queries against 10^6 references (:mod:`.index`)."""
