"""``coral-graph view --export DIR RUN``: a self-contained static copy of one run.

The copy is the viewer's own page and assets plus the run's data as JSON files
under ``data/``; the same JavaScript reads them (it sees ``data-mode="static"``
on the page and answers filters and search in the browser instead of asking the
server). Any static file server works, e.g. ``python -m http.server -d DIR``.
No Starlette needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from coral_graph.viewer.query import RunReader
from coral_graph.viewer.web._security import STATIC_DIR

__all__ = ["CHUNK", "export_run"]

CHUNK = 2000
"""Messages per ``data/messages/NNNNN.json`` file."""


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), "utf-8")


def export_run(reader: RunReader, run_id: str, dest: str | Path) -> Path:
    """Write run ``run_id`` as a static site into ``dest`` (created if needed).

    Returns:
        The path of the site's ``index.html``.
    """
    out = Path(dest)
    run = reader.run(run_id)  # raises RunNotFoundError first, before writing anything
    out.mkdir(parents=True, exist_ok=True)
    static = out / "static"
    if static.exists():
        shutil.rmtree(static)
    shutil.copytree(STATIC_DIR, static, ignore=shutil.ignore_patterns("index.html"))
    page = (STATIC_DIR / "index.html").read_text("utf-8")
    page = page.replace('data-mode="server"', 'data-mode="static"', 1)
    (out / "index.html").write_text(page, "utf-8")
    data = out / "data"
    msgs_dir = data / "messages"
    if msgs_dir.exists():
        shutil.rmtree(msgs_dir)
    msgs_dir.mkdir(parents=True)
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
        _write(msgs_dir / f"{chunks:05d}.json", buf)
        chunks += 1
        total += len(buf)
        after = buf[-1]["gseq"]
        if not page_data["has_after"]:
            break
    run["chunks"] = chunks
    run["chunk_size"] = CHUNK
    run["exported_messages"] = total
    _write(data / "config.json", {"mode": "static", "default_run": run_id})
    _write(data / "runs.json", [{k: v for k, v in run.items() if k not in ("threads", "graph")}])
    _write(data / "run.json", run)
    _write(data / "agents.json", reader.agents(run_id))
    _write(data / "graph.json", reader.graph(run_id))
    return out / "index.html"
