"""The log's dashboard: server-rendered HTML pages over the log, its builds and its witnesses.

- :mod:`logserver.dashboard.index` — the in-memory build index, kept level by a sequencer
  listener (pure :class:`~logserver.dashboard.index.BuildIndex` and its follower thread);
- :mod:`logserver.dashboard.coverage` — pure tallies of crates by their last verdict, a
  timeline and failure reasons (the index keeps one);
- :mod:`logserver.dashboard.pages`, :mod:`logserver.dashboard.build` and
  :mod:`logserver.dashboard.coverage_page` — pure HTML rendering;
- :mod:`logserver.dashboard.routes` — ``add_dashboard(app, service)`` registers the pages.

The log server adds it for you; in outline::

    app = logserver.http.create_app(service)   # calls add_dashboard(app, service)
"""

__all__ = ["build", "coverage", "coverage_page", "index", "pages", "routes"]
