"""Errors of the event store. All are :class:`coral_graph.CoralError`.

::

    CoralError
    └── StoreError
        ├── NotAStoreError      the file is not a coral-graph store
        ├── StoreVersionError   written by a newer coral-graph
        ├── UnknownRunError     no run with that id in the store
        ├── RunExistsError      importing a run that is already stored
        └── ExportFormatError   a corrupt, truncated or foreign export file
"""

from __future__ import annotations

from coral_graph._errors import CoralError

__all__ = [
    "ExportFormatError",
    "NotAStoreError",
    "RunExistsError",
    "StoreError",
    "StoreVersionError",
    "UnknownRunError",
]


class StoreError(CoralError):
    """A problem with an event store or an export file."""


class NotAStoreError(StoreError):
    """``path`` is not a coral-graph store (or cannot be opened)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} is not a coral-graph store: {reason}")
        self.path = path
        self.reason = reason


class StoreVersionError(StoreError):
    """The store was written by a newer coral-graph (schema ``found`` > ``supported``)."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, but this coral-graph reads up to version "
            f"{supported}; upgrade coral-graph to open it"
        )
        self.path = path
        self.found = found
        self.supported = supported


class UnknownRunError(StoreError):
    """No run ``run_id`` in the store."""

    def __init__(self, run_id: str, path: str, known: list[str] | None = None) -> None:
        hint = f"; recent runs: {', '.join(known)}" if known else ""
        super().__init__(f"no run {run_id!r} in {path}{hint} (list them with `coral-graph runs`)")
        self.run_id = run_id
        self.path = path


class RunExistsError(StoreError):
    """An import would overwrite a run that is already stored."""

    def __init__(self, run_id: str, path: str) -> None:
        super().__init__(f"run {run_id!r} is already in {path}; import it into another store")
        self.run_id = run_id
        self.path = path


class ExportFormatError(StoreError):
    """An export file is corrupt, truncated, or not a coral-graph export."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} is not a valid coral-graph export: {reason}")
        self.path = path
        self.reason = reason
