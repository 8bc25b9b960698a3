"""The small files CrystalForge ships (installed as the package ``crystalforge_data``).

Read them through :func:`evaluation.paths.data_dir`, never by path from a module's location: an
installed (non-editable) CrystalForge has them in site-packages, not beside the source.
"""
