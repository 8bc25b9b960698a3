"""``crystalforge explore``: the results explorer, served on localhost or exported as HTML.

Only reads the store: an embedded store that is not there is an error, never a new empty one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import DEFAULT_STORE, StoreOption, fail, opened_store, output_folder


def explore(
    store: StoreOption = DEFAULT_STORE,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on localhost (0: any free port).")
    ] = 8050,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the pages as static HTML into this folder (index.html at its top) "
            "instead of serving them.",
        ),
    ] = None,
) -> None:
    """Browse campaigns, candidates, hull diagrams and 3D structures in a web browser."""
    if export is not None:
        output_folder(export, "--export")
    with opened_store(store) as results:
        if export is not None:
            from pipeline.explorer.site import export as export_site

            count = export_site(results, export)
            typer.echo(f"wrote {count} files to {export}; open {export / 'index.html'}")
            return
        from pipeline.explorer.server import make_server

        try:
            server = make_server(results, port=port)
        except OSError as error:
            raise fail(f"--port {port}: {error.strerror or error}") from None
        typer.echo(f"explorer on {server.url} (read-only; Ctrl-C stops it)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
