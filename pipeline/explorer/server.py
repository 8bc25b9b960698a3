"""``crystalforge explore``'s web server: the explorer's pages, rendered per request, read-only.

The standard library's HTTP server, one request at a time: the explorer is for one person on
localhost, and the embedded store (sqlite) is not shared across threads. Every request gets a
fresh :class:`~pipeline.explorer.site.Site`, so a campaign still running shows its latest state
on reload. Only GET and HEAD are served; nothing writes to the store.
"""

from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from pipeline.explorer.site import Site
from pipeline.store import ResultsStore


class ExplorerServer(HTTPServer):
    """An HTTP server answering from one results store."""

    def __init__(self, address: tuple[str, int], store: ResultsStore) -> None:
        super().__init__(address, ExplorerHandler)
        self.store = store

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class ExplorerHandler(BaseHTTPRequestHandler):
    """GET/HEAD of the explorer's pages; 404 for anything else."""

    server: ExplorerServer

    def _answer(self, with_body: bool) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        try:
            content, media_type = Site(self.server.store).render(path)
        except KeyError:
            self.send_error(HTTPStatus.NOT_FOUND, f"nothing at /{path}")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")  # a running campaign changes
        self.end_headers()
        if with_body:
            self.wfile.write(content)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the terminal shows the URL once, not every asset request


def make_server(store: ResultsStore, host: str = "127.0.0.1", port: int = 8050) -> ExplorerServer:
    """A server on ``host:port`` (``port`` 0: any free port), not yet serving.

    Raises
    ------
    OSError
        When the port cannot be bound (in use, or not allowed).
    """
    return ExplorerServer((host, port), store)
