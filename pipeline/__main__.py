"""``python -m pipeline`` runs the ``crystalforge`` command line."""

from pipeline.cli import app

app(prog_name="crystalforge")
