"""Energies above the convex hull, one level of theory at a time: hull references and results
(:mod:`.core`), Materials Project energies (:mod:`.mp_entries`), what is known about a chemical
system and coverage (:mod:`.known_phases`), MLFF energies on the known-phase DFT hull
(:mod:`.screening`), MLFF-level references (:mod:`.mlff_reference`) and the choice of hull for an
energy (:mod:`.stability`)."""
