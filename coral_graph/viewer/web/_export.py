"""``coral-graph view --export DIR RUN``: a self-contained static copy of one run.

The copy is the viewer's own page and assets plus the run's data under ``data/``
as JavaScript files (``data/run.js`` sets ``window.__coralData["run"] = {…}``);
the same page loads them with ``<script>`` elements (it sees ``data-mode="static"``
and answers filters and search in the browser instead of asking a server). So the
copy opens straight from disk (``file://``, where a browser refuses to fetch
files) as well as from any static file server, e.g. ``python -m http.server -d
DIR``. No Starlette needed.

It never deletes or overwrites what coral-graph did not write. ``DIR`` must be
empty (or new); with ``force=True`` (``--force``) it may hold an earlier export:
the files listed in that export's manifest (:data:`MANIFEST`, written along
with the files) are replaced or removed, every other file is left alone, and a
file of the new export's that exists but is not in the manifest (the user's
own ``index.html``, say) stops the export before anything is written.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path, PurePosixPath
from typing import Any

from coral_graph.store._errors import ExportFolderError
from coral_graph.store._guard import db_error
from coral_graph.store._json import dumps
from coral_graph.viewer.query import RunReader
from coral_graph.viewer.web._security import STATIC_DIR

__all__ = ["CHUNK", "MANIFEST", "export_run"]

CHUNK = 2000
"""Messages per ``data/messages/NNNNN.js`` file."""
MANIFEST = ".coral-graph-export.json"
"""The list of files an export wrote (relative paths), in the export's folder."""
_FIXED = (
    "index.html",
    "data/config.js",
    "data/runs.js",
    "data/run.js",
    "data/agents.js",
    "data/graph.js",
    "data/timeline.js",
    "data/logs.js",
    "data/calls.js",
)


def _static_files() -> list[str]:
    return sorted(
        "static/" + p.relative_to(STATIC_DIR).as_posix()
        for p in STATIC_DIR.rglob("*")
        if p.is_file() and p.name != "index.html"
    )


def _manifest(out: Path) -> set[str]:
    """The files an earlier export wrote into ``out`` (only safe relative paths)."""
    try:
        data = json.loads((out / MANIFEST).read_text("utf-8"))
        files = data["files"] if isinstance(data, dict) else None
    except (OSError, ValueError, KeyError):
        return set()
    if not isinstance(files, list):
        return set()
    ok = set()
    for f in files:
        if not isinstance(f, str):
            continue
        pp = PurePosixPath(f)
        if f and not pp.is_absolute() and ".." not in pp.parts and pp.parts[0] != MANIFEST:
            ok.add(pp.as_posix())
    return ok


class _Site:
    """Writes the export's files, keeping the manifest in step."""

    def __init__(self, out: Path, run_id: str, previous: set[str]) -> None:
        self.out = out
        self.run_id = run_id
        self.previous = previous
        self.written: list[str] = []

    def _save_manifest(self) -> None:
        # Everything this export or an earlier one may have left here, so that
        # an export cut short can still be replaced with --force.
        files = sorted(set(self.written) | self.previous)
        data = {"format": "coral-graph-static-export", "run_id": self.run_id, "files": files}
        (self.out / MANIFEST).write_text(json.dumps(data, indent=1), "utf-8")

    def write(self, rel: str, content: str | bytes) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel not in self.written:
            self.written.append(rel)
            self._save_manifest()
        if path.is_symlink():
            path.unlink()  # ours (in the manifest): never write through a link
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")

    def json(self, rel: str, data: Any) -> None:
        self.write(rel, dumps(data, ensure_ascii=False, separators=(",", ":")))

    def script(self, name: str, data: Any) -> None:
        """``data/<name>.js``: a script that puts ``data`` in ``window.__coralData``.

        JSON is a JavaScript expression; ``</`` (and U+2028/9) are escaped so the
        text stays one expression even if a page ever inlines it.
        """
        text = dumps(data, ensure_ascii=False, separators=(",", ":"))
        text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        key = dumps(name)
        head = "(window.__coralData = window.__coralData || {})"
        self.write(f"data/{name}.js", f"{head}[{key}] = {text};\n")

    def finish(self) -> None:
        """Remove files of the earlier export this one did not write again."""
        for rel in sorted(self.previous - set(self.written)):
            path = self.out / rel
            if path.is_file() or path.is_symlink():
                path.unlink()
        self.previous = set()
        self._save_manifest()


def _check_folder(out: Path, force: bool) -> set[str]:
    """Refuse a folder the export could damage; returns the earlier manifest."""
    if out.exists() and not out.is_dir():
        raise ExportFolderError(str(out), "it is a file, not a folder")
    if not out.is_dir():
        return set()
    present = [p for p in out.iterdir()]
    if not present:
        return set()
    if not force:
        raise ExportFolderError(
            str(out),
            "it is not empty; choose an empty folder, or pass --force to replace an earlier "
            "coral-graph export there (files coral-graph did not write are never touched)",
        )
    previous = _manifest(out)
    # Every path the new export may write: its fixed files, the viewer's assets
    # and any message chunk (data/messages/*.js).
    ours = set(_FIXED) | set(_static_files())
    msgs = out / "data" / "messages"
    if msgs.is_dir() and not msgs.is_symlink():
        ours |= {f"data/messages/{p.name}" for p in msgs.iterdir() if p.suffix == ".js"}
    clash = sorted(rel for rel in ours if rel not in previous and os.path.lexists(out / rel))
    # A folder on the way that is a link would send our files elsewhere.
    links = sorted(
        d
        for d in {str(PurePosixPath(rel).parent) for rel in ours | {"data/messages/x"}}
        if d != "." and (out / d).is_symlink()
    )
    if clash or links:
        names = ", ".join((clash + links)[:5]) + (" ..." if len(clash + links) > 5 else "")
        raise ExportFolderError(
            str(out),
            f"it holds files coral-graph did not write that the export would replace ({names}); "
            "move them, or choose another folder",
        )
    return previous


def export_run(reader: RunReader, run_id: str, dest: str | Path, *, force: bool = False) -> Path:
    """Write run ``run_id`` as a static site into ``dest`` (created if needed).

    Args:
        force: ``dest`` may hold an earlier export, which is replaced (see above).

    Returns:
        The path of the site's ``index.html``.

    Raises:
        ExportFolderError: ``dest`` is not empty (without ``force``), or holds files
            coral-graph did not write in the export's way; nothing is written then.
    """
    try:
        return _export(reader, run_id, Path(dest), force)
    except sqlite3.Error as exc:
        raise db_error(exc, str(reader.path)) from None


def _export(reader: RunReader, run_id: str, out: Path, force: bool) -> Path:
    run = reader.run(run_id)  # raises RunNotFoundError first, before writing anything
    previous = _check_folder(out, force)
    out.mkdir(parents=True, exist_ok=True)
    site = _Site(out, run_id, previous)
    for rel in _static_files():
        site.write(rel, (STATIC_DIR / rel.removeprefix("static/")).read_bytes())
    page = (STATIC_DIR / "index.html").read_text("utf-8")
    site.write("index.html", page.replace('data-mode="server"', 'data-mode="static"', 1))
    chunks = 0
    after = 0
    total = 0
    while True:
        page_data = reader.messages(run_id, after=after, limit=CHUNK // 4)
        items: list[dict[str, Any]] = page_data["items"]
        buf = items
        while page_data["has_after"] and len(buf) < CHUNK:
            page_data = reader.messages(run_id, after=buf[-1]["gseq"], limit=CHUNK // 4)
            buf = buf + page_data["items"]
        if not buf:
            break
        site.script(f"messages/{chunks:05d}", buf)
        chunks += 1
        total += len(buf)
        after = buf[-1]["gseq"]
        if not page_data["has_after"]:
            break
    run["chunks"] = chunks
    run["chunk_size"] = CHUNK
    run["exported_messages"] = total
    site.script("config", {"mode": "static", "default_run": run_id})
    site.script("runs", [{k: v for k, v in run.items() if k not in ("threads", "graph")}])
    site.script("run", run)
    site.script("agents", reader.agents(run_id))
    site.script("graph", reader.graph(run_id))
    site.script("timeline", reader.timeline(run_id))
    site.script("logs", reader.logs(run_id))
    # Every model call in full (prompt and response): the inspector reads them here.
    site.script("calls", reader.llm_calls(run_id, full=True))
    site.finish()
    return out / "index.html"
