"""``python -m pipeline`` runs the ``crystalforge`` command line."""

from pipeline.cli import main

main()
