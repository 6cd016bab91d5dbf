"""Event stores: the embedded SQLite store, its reader, replay and resume, exports.

>>> from coral_graph.store import SQLiteStore, open_reader, open_store
"""

from __future__ import annotations

from coral_graph.store._errors import (
    AmbiguousRunError,
    ExportFolderError,
    ExportFormatError,
    NotAStoreError,
    RunExistsError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreVersionError,
    StoreWriteError,
    StoreWriterDiedError,
    UnknownRunError,
)
from coral_graph.store._export import export_run, import_run, read_export
from coral_graph.store._reader import StoreReader, open_reader
from coral_graph.store._replay import RunState, replay
from coral_graph.store._resume import resume_run
from coral_graph.store._schema import SCHEMA_VERSION
from coral_graph.store._sqlite import DEFAULT_DB, ENV_DB, SQLiteStore, open_store, resolve_db

__all__ = [
    "DEFAULT_DB",
    "AmbiguousRunError",
    "ENV_DB",
    "SCHEMA_VERSION",
    "ExportFolderError",
    "ExportFormatError",
    "NotAStoreError",
    "RunExistsError",
    "RunState",
    "SQLiteStore",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreReadOnlyError",
    "StoreReader",
    "StoreVersionError",
    "StoreWriteError",
    "StoreWriterDiedError",
    "UnknownRunError",
    "export_run",
    "import_run",
    "open_reader",
    "open_store",
    "read_export",
    "replay",
    "resolve_db",
    "resume_run",
]
