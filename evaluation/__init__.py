"""Evaluation core of CrystalForge.

The crystal data layer (reading and writing crystals), the shipped reference set, structure
matching (uniqueness and novelty), convex hulls at one level of theory, and the paper's metrics
(validity, S.U.N., RMSD). Nothing here imports ``flows`` or ``pipeline``.
"""
