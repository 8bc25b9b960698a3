"""The results explorer: campaigns, candidates, hulls and 3D structures in a browser.

One set of pages, rendered from the results store by :mod:`pipeline.explorer.site`, reaches the
user two ways: served by ``crystalforge explore`` (read-only, on localhost) or written as static
HTML by ``crystalforge explore --export DIR``. Links are relative and every asset (plotly.js,
3Dmol.js, the page script and style) is copied next to the pages, so an export opens from disk
on a machine without internet.

- :mod:`~pipeline.explorer.views`: what a page shows, read from the store (no HTML);
- :mod:`~pipeline.explorer.figures`: the hull diagram and the E_hull histogram (plotly);
- :mod:`~pipeline.explorer.site`: the pages (Jinja2 templates) and the static export.
"""
