"""Viewers of stored runs. They read stores, never write.

* :mod:`coral_graph.viewer.query` — read-only queries over the SQLite store that
  the viewers share (pages of messages by cursor, filters, search, per-agent stats,
  the sender → mention graph). No third-party imports.
* :mod:`coral_graph.viewer.web` — the web transcript viewer (Starlette; an optional
  extra, imported only when ``coral-graph view`` runs) and its static export.
"""

from __future__ import annotations
