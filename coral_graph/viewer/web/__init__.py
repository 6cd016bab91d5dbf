"""The web transcript viewer: a Starlette app over :class:`~coral_graph.viewer.query.RunReader`
and hand-written static assets (no build step, nothing loaded from outside).

Importing this package does not import Starlette; :func:`create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coral_graph.viewer.web._export import export_run
from coral_graph.viewer.web._security import CSP, STATIC_DIR

if TYPE_CHECKING:
    from coral_graph.viewer.web._app import create_app

__all__ = ["CSP", "STATIC_DIR", "create_app", "export_run"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from coral_graph.viewer.web._app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
