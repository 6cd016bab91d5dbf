"""Errors of the event store. All are :class:`coral_graph.CoralError`.

::

    CoralError
    └── StoreError
        ├── NotAStoreError      the file is not a coral-graph store
        ├── StoreVersionError   written by a newer coral-graph
        ├── UnknownRunError     no run with that id in the store
        │   └── AmbiguousRunError  an id prefix that matches several runs
        ├── RunExistsError      importing a run that is already stored
        ├── ExportFormatError   a corrupt, truncated or foreign export file
        ├── ExportFolderError   an export would replace files coral-graph did not write
        ├── StoreCorruptError   the database file is damaged (bad pages)
        └── StoreWriteError     the store could not write (the run itself goes on)
            ├── StoreFullError        the disk (or file system) is full
            ├── StoreReadOnlyError    the file or its folder cannot be written
            └── StoreWriterDiedError  the writer process ended (killed)

Every error of a stored run's writing is a :class:`StoreWriteError`: one line
(``str(err)``) that says what happened, what was kept and what to do
(``err.hint``).
"""

from __future__ import annotations

import errno
import sqlite3

from coral_graph._errors import CoralError

__all__ = [
    "ExportFolderError",
    "AmbiguousRunError",
    "ExportFormatError",
    "NotAStoreError",
    "RunExistsError",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreReadOnlyError",
    "StoreVersionError",
    "StoreWriteError",
    "StoreWriterDiedError",
    "UnknownRunError",
    "fault_kind",
    "write_error",
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


class AmbiguousRunError(UnknownRunError):
    """``prefix`` matches more than one run (``matches``: some of them, newest first)."""

    def __init__(self, prefix: str, path: str, matches: list[str], count: int) -> None:
        more = f", … ({count - len(matches)} more)" if count > len(matches) else ""
        StoreError.__init__(
            self,
            f"{prefix} matches {count} runs: {', '.join(matches)}{more}; "
            "give more of the id (or 'last')",
        )
        self.run_id = prefix
        self.path = path
        self.matches = matches
        self.count = count


class RunExistsError(StoreError):
    """An import would overwrite a run that is already stored."""

    def __init__(self, run_id: str, path: str) -> None:
        super().__init__(
            f"run {run_id!r} is already in {path} (imported before); nothing was written "
            "(import it into another store with --db)"
        )
        self.run_id = run_id
        self.path = path


class ExportFormatError(StoreError):
    """An export file is corrupt, truncated, or not a coral-graph export."""

    def __init__(self, path: str, reason: str) -> None:
        # The reason quotes the file's own values (a kind, a key): a control
        # character among them is shown escaped, so the error stays one line.
        reason = "".join(c if c.isprintable() else repr(c)[1:-1] for c in reason)
        super().__init__(f"{path} is not a valid coral-graph export: {reason}")
        self.path = path
        self.reason = reason


class ExportFolderError(StoreError):
    """An export's destination holds files coral-graph did not write (or is not a
    folder): nothing was written."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot export into {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreCorruptError(StoreError):
    """The database file is damaged: SQLite reports a malformed page (a disk fault,
    a bit flip, a copy taken mid-write)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        self.hint = (
            f"recover what is readable with `sqlite3 {path} .recover | sqlite3 recovered.db`, "
            "then pass --db recovered.db"
        )
        super().__init__(f"the store {path} is damaged ({detail}); {self.hint}")


class StoreWriteError(StoreError):
    """The store stopped writing. Everything committed before the fault stays
    readable; the run itself went on without its transcript from then on.

    Attributes:
        path: the store file.
        reason: what happened (SQLite's or the system's words).
        hint: what to do about it.
    """

    default_hint = "check the file and its folder, then run again"
    what = "stopped writing"

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint or self.default_hint
        super().__init__(
            f"the store {path} {self.what}: {reason}; what was written before is kept "
            f"(`coral-graph show` reads it); {self.hint}"
        )


class StoreFullError(StoreWriteError):
    """The disk (or the file system holding the store) is full."""

    default_hint = "free some disk space, or pass --db on another disk"
    what = "ran out of disk space"


class StoreReadOnlyError(StoreWriteError):
    """The store file or its folder cannot be written (permissions, an immutable
    file, a read-only file system)."""

    default_hint = "make the file and its folder writable, or pass --db to use another file"
    what = "cannot be written"


class StoreWriterDiedError(StoreWriteError):
    """The store's writer process ended before it was closed (killed, or it crashed)."""

    default_hint = "the run's later events were not recorded; run it again to record them"
    what = "lost its writer process"


def fault_kind(exc: BaseException) -> str:
    """``full``, ``readonly``, ``corrupt`` (a damaged page), ``notadb`` (not SQLite
    at all) or ``other``: what an SQLite or system failure means."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        if name == "SQLITE_FULL" or "disk is full" in text:
            return "full"
        if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
            return "readonly"
        if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
            return "corrupt"
        if name == "SQLITE_NOTADB" or "not a database" in text:
            return "notadb"
        if name.startswith("SQLITE_IOERR") and "disk" in text:
            return "full"
        return "other"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full"
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return "readonly"
    return "other"


def write_error(path: str, kind: str, reason: str) -> StoreError:
    """The typed error of a write failure of ``kind`` (see :func:`fault_kind`)."""
    if kind in ("corrupt", "notadb"):
        return StoreCorruptError(path, reason)
    cls: type[StoreWriteError] = {
        "full": StoreFullError,
        "readonly": StoreReadOnlyError,
        "died": StoreWriterDiedError,
    }.get(kind, StoreWriteError)
    return cls(path, reason)
