"""The Python object of a ``kind: python`` agent: ``file.py:Name`` by path, or
``package.module:Name`` by import — checked without running anything, loaded only
when a run needs it.

Two steps, kept apart on purpose:

* :func:`check_ref` (``validate``, ``graph``, and every load): finds the source
  file and parses it with :mod:`ast`, never importing it. The file must exist, be
  valid Python and bind ``Name`` at its top level (a ``def``, ``class``,
  assignment or import). A module is located through the import system's finders
  (the top-level package's spec, then its search locations), which run no module
  code; a module with no Python source (built in or compiled) cannot be checked
  and passes, to be checked when it is loaded.
* :func:`load_object` (``load_graph``, i.e. when a run starts): imports the
  module. Whatever it raises at import — ``SystemExit`` included — becomes a
  :class:`PythonRefError` naming the file; only ``KeyboardInterrupt`` and
  cancellation pass through.

A ``file.py`` reference must stay inside the folder of the YAML file that names it
(no absolute path, no ``..`` out of it): a graph file cannot reach for code
elsewhere on the disk. Code elsewhere is used as an installed module
(``package.module:Name``).

Files are loaded by path (never by putting a folder on ``sys.path``): the registry's
``agents/`` must not shadow the popular ``agents`` package. Each file is loaded once
per process under a private module name.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["PythonRefError", "StaticRef", "check_ref", "load_object", "reraise_if_fatal"]

_MODULES: dict[Path, ModuleType] = {}


class PythonRefError(Exception):
    """The reference cannot be loaded; the message says why and what to do."""


def reraise_if_fatal(exc: BaseException) -> None:
    """Let Ctrl-C and cancellation through; anything else user code raises (even
    ``SystemExit``) is reported as a problem of that code."""
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        raise exc


@dataclass(frozen=True, slots=True)
class StaticRef:
    """What :func:`check_ref` found.

    Attributes:
        file: the source file that binds the name (None: no Python source to read).
        doc: the docstring (or ``description = "..."``) of the named class or
            function, for drawings of a graph that was only checked.
    """

    file: Path | None
    doc: str = ""


def _split(ref: str) -> tuple[str, str]:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise PythonRefError(f'expected "file.py:Name" or "package.module:Name", got "{ref}"')
    return target, attr


def _is_file_ref(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _file_path(target: str, base_dir: Path) -> Path:
    """``target`` below ``base_dir``, refusing anything outside it."""
    rel = Path(target)
    root = os.path.abspath(base_dir)
    inside = os.path.abspath(base_dir / rel)  # normalised: ".." is applied, links are not
    if rel.is_absolute() or os.path.commonpath([root, inside]) != root:
        raise PythonRefError(
            f"file {target} is outside the folder of the YAML file that names it ({base_dir}); "
            "python: files must be inside that folder: move the file there, or install it "
            'and write "package.module:Name"'
        )
    path = base_dir / rel
    if not path.is_file():
        raise PythonRefError(f"file {target} not found (looked in {base_dir})")
    return path


# -- static check ---------------------------------------------------------------------


def _bound_names(body: list[ast.stmt], out: dict[str, ast.AST]) -> bool:
    """Add the names ``body`` binds at module level to ``out``; true when the module
    may bind names no parser can see (``import *``, a module ``__getattr__``)."""
    opaque = False

    def targets(node: ast.AST, stmt: ast.AST) -> None:
        if isinstance(node, ast.Name):
            out.setdefault(node.id, stmt)
        elif isinstance(node, ast.Tuple | ast.List):
            for elt in node.elts:
                targets(elt, stmt)
        elif isinstance(node, ast.Starred):
            targets(node.value, stmt)

    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.setdefault(stmt.name, stmt)
            opaque = opaque or stmt.name == "__getattr__"
        elif isinstance(stmt, ast.Assign):
            for t in stmt.targets:
                targets(t, stmt)
        elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
            targets(stmt.target, stmt)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                out.setdefault(alias.asname or alias.name.split(".")[0], stmt)
        elif isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if alias.name == "*":
                    opaque = True
                else:
                    out.setdefault(alias.asname or alias.name, stmt)
        elif isinstance(stmt, ast.For | ast.AsyncFor):
            targets(stmt.target, stmt)
            opaque |= _bound_names(stmt.body, out) | _bound_names(stmt.orelse, out)
        elif isinstance(stmt, ast.While | ast.If):
            opaque |= _bound_names(stmt.body, out) | _bound_names(stmt.orelse, out)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            for item in stmt.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars, stmt)
            opaque |= _bound_names(stmt.body, out)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            for part in (stmt.body, stmt.orelse, stmt.finalbody):
                opaque |= _bound_names(part, out)
            for handler in stmt.handlers:
                if handler.name:
                    out.setdefault(handler.name, stmt)
                opaque |= _bound_names(handler.body, out)
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                opaque |= _bound_names(case.body, out)
    return opaque


def _doc(node: ast.AST) -> str:
    if isinstance(node, ast.ClassDef):
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "description" for t in stmt.targets)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                return stmt.value.value
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return ast.get_docstring(node) or ""
    return ""


def _check_source(file: Path, shown: str, attr: str) -> StaticRef:
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except SyntaxError as exc:
        raise PythonRefError(f"{shown}:{exc.lineno}: invalid Python: {exc.msg}") from None
    except (OSError, ValueError, RecursionError, MemoryError) as exc:
        raise PythonRefError(f"cannot read {shown} as Python: {type(exc).__name__}") from None
    names: dict[str, ast.AST] = {}
    opaque = _bound_names(tree.body, names)
    first = attr.split(".")[0]
    node = names.get(first)
    if node is None:
        if opaque:
            return StaticRef(file)
        from coral_graph._errors import suggest

        found = suggest(first, [n for n in names if not n.startswith("_")])
        hint = f' — did you mean "{found}"?' if found else ""
        raise PythonRefError(f'{shown} has no "{first}"{hint}')
    if isinstance(node, ast.ClassDef) and "." not in attr:
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "handle":
                raise PythonRefError(f"{node.name}.handle must be `async def`")
    return StaticRef(file, _doc(node))


def _module_file(target: str) -> Path | None:
    """The source file of module ``target``, found without importing it or its
    parents (None: the module has no Python source to read)."""
    parts = target.split(".")
    if not all(p.isidentifier() for p in parts):
        raise PythonRefError(f'"{target}" is not a module name such as "package.module"')
    loaded = sys.modules.get(target)
    spec = getattr(loaded, "__spec__", None) if loaded is not None else None
    if spec is None:
        try:
            spec = importlib.util.find_spec(parts[0])
            if spec is not None and spec.origin in ("frozen", "built-in") and len(parts) == 1:
                # Frozen standard modules still have their source on disk.
                spec = importlib.machinery.PathFinder.find_spec(parts[0]) or spec
            for i in range(1, len(parts)):
                if spec is None:
                    break
                locations = spec.submodule_search_locations
                if locations is None:
                    raise PythonRefError(
                        f"cannot find module {target}: {'.'.join(parts[:i])} is not a package"
                    )
                spec = importlib.machinery.PathFinder.find_spec(
                    ".".join(parts[: i + 1]), list(locations)
                )
        except (ImportError, ValueError) as exc:
            raise PythonRefError(f"cannot find module {target}: {exc}") from None
    if spec is None:
        raise PythonRefError(
            f"cannot find module {target}: install it, or use a file next to the graph "
            '("file.py:Name")'
        )
    origin = spec.origin
    if origin is None or not origin.endswith(".py"):
        return None
    return Path(origin)


def check_ref(ref: str, base_dir: Path) -> StaticRef:
    """Check ``ref`` (``file.py:Name`` relative to ``base_dir``, or ``module:Name``)
    without running any of its code.

    Raises:
        PythonRefError: the file or module is missing, outside ``base_dir``, not valid
            Python, or does not bind ``Name``.
    """
    target, attr = _split(ref)
    if _is_file_ref(target):
        return _check_source(_file_path(target, base_dir), target, attr)
    file = _module_file(target)
    if file is None:
        return StaticRef(None)
    return _check_source(file, target, attr)


# -- loading (a run starts) ---------------------------------------------------------


def _load_file(path: Path, shown: str) -> ModuleType:
    path = path.resolve()
    cached = _MODULES.get(path)
    if cached is not None:
        return cached
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    modname = f"_coral_graph_user.{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PythonRefError(f"cannot load {shown} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(modname, None)
        reraise_if_fatal(exc)
        raise PythonRefError(f"importing {shown} failed: {_describe_exc(exc)}") from exc
    _MODULES[path] = module
    return module


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it raised SystemExit({exc.code!r}) (a module must not exit the process)"
    return f"{type(exc).__name__}: {exc}"


def load_object(ref: str, base_dir: Path) -> object:
    """Import and return the object named by ``ref`` (``file.py:Name`` relative to
    ``base_dir``, or ``module:Name``). Runs the module's code: call it only when a
    run starts, after :func:`check_ref`."""
    target, attr = _split(ref)
    if _is_file_ref(target):
        module = _load_file(_file_path(target, base_dir), target)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise PythonRefError(f"cannot import {target}: {exc}") from exc
        except BaseException as exc:
            reraise_if_fatal(exc)
            raise PythonRefError(f"importing {target} failed: {_describe_exc(exc)}") from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            from coral_graph._errors import suggest

            names = [n for n in dir(obj) if not n.startswith("_")]
            found = suggest(part, names)
            hint = f' — did you mean "{found}"?' if found else ""
            raise PythonRefError(f'{target} has no "{part}"{hint}')
        obj = getattr(obj, part)
    return obj
