"""``coral-graph view``: the web transcript viewer, or its static export.

Starlette and Uvicorn (the ``viewer`` extra) are imported inside the command only.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from coral_graph.cli._app import EXIT_BAD_INPUT, DbOption, app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_token(loopback: bool, token: str | None) -> str | None:
    """The token the viewer requires: the one given, or a random one off loopback.

    An empty (or blank) token is treated as no token at all, whether it came from
    ``--token ""`` or from an empty ``CORAL_VIEW_TOKEN`` (which the option parser
    already reads as unset): it would let anyone in with an empty cookie.

    >>> serve_token(True, None), serve_token(True, ""), serve_token(True, "s3cret")
    (None, None, 's3cret')
    >>> len(serve_token(False, "") or "") >= 24
    True
    """
    if token is not None and not token.strip():
        token = None
    if not loopback and token is None:
        token = secrets.token_urlsafe(18)
    return token


def _fail(text: str) -> typer.Exit:
    typer.echo(f"error: {text}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command()
def view(
    run: Annotated[
        str | None,
        typer.Argument(help="A run id (a unique prefix, or 'last'). Default: the list of runs."),
    ] = None,
    db: DbOption = None,
    port: Annotated[int, typer.Option("--port", help="The port; 0 picks a free one.")] = 0,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The interface. Anything but loopback needs --token (or gets a random one).",
        ),
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Require this token on every request (empty: as if not given).",
            envvar="CORAL_VIEW_TOKEN",
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write a self-contained static copy of RUN into this folder and exit "
            "(serve it with `python -m http.server -d DIR`).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --export: replace an earlier export in DIR (only the files it wrote).",
        ),
    ] = False,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in a browser.")
    ] = False,
    stream_max_s: Annotated[
        float, typer.Option("--stream-max-s", hidden=True, help="Recycle live streams (tests).")
    ] = 300.0,
) -> None:
    """Browse runs in the web transcript viewer (threads, mentions, the graph, live runs)."""
    from coral_graph.store import StoreError
    from coral_graph.store._reader import open_reader
    from coral_graph.viewer.query import RunReader

    try:
        with open_reader(db) as store:
            rid = store.resolve_run(run) if run is not None else None
        reader = RunReader(db)
    except (StoreError, LookupError) as exc:
        raise _fail(str(exc)) from None

    if export is not None:
        from coral_graph.viewer.web._export import export_run

        if rid is None:
            raise _fail("--export needs a RUN (an id, a unique prefix, or 'last')")
        try:
            index = export_run(reader, rid, export, force=force)
        except StoreError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"cannot write {export}: {exc.strerror or exc}") from None
        typer.echo(f"exported {rid} to {index.parent}")
        typer.echo(f"serve it with: python -m http.server -d {index.parent}")
        return

    try:
        import uvicorn

        from coral_graph.viewer.web._app import create_app
    except ModuleNotFoundError as exc:
        raise _fail(f"the web viewer needs {exc.name}: pip install 'coral-graph[viewer]'") from None

    loopback = _is_loopback(host)
    if token is not None and not token.strip():
        typer.echo("note: an empty --token is never used as a token", err=True)
    token = serve_token(loopback, token)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # Listen before the URL is printed: whoever reads it may connect at once, and
    # uvicorn calls listen() only once its loop is up (until then: refused).
    sock.listen(2048)
    bound = sock.getsockname()[1]
    url_host = host
    if ":" in url_host and not url_host.startswith("["):
        url_host = f"[{url_host}]"
    url = f"http://{url_host}:{bound}/"
    if token is not None:
        url += f"?token={quote(token)}"
    if rid is not None:
        url += f"#run={quote(rid)}"
    application = create_app(
        reader,
        default_run=rid,
        token=token,
        check_host=loopback,
        stream_max_s=stream_max_s,
    )
    typer.echo(f"coral-graph viewer on {url}", err=False)
    typer.echo("press Ctrl-C to stop", err=True)
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(
        application,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    finally:
        sock.close()
