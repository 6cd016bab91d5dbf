"""Load the Python object of a ``kind: python`` agent: ``file.py:Name`` by path, or
``package.module:Name`` by import.

Files are loaded by path (never by putting a folder on ``sys.path``): the registry's
``agents/`` must not shadow the popular ``agents`` package. Each file is loaded once
per process under a private module name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["PythonRefError", "load_object"]

_MODULES: dict[Path, ModuleType] = {}


class PythonRefError(Exception):
    """The reference cannot be loaded; the message says why and what to do."""


def _load_file(path: Path) -> ModuleType:
    cached = _MODULES.get(path)
    if cached is not None:
        return cached
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    modname = f"_coral_graph_user.{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise PythonRefError(f"cannot load {path.name} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(modname, None)
        raise PythonRefError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    _MODULES[path] = module
    return module


def load_object(ref: str, base_dir: Path) -> object:
    """The object named by ``ref`` (``file.py:Name`` relative to ``base_dir``, or
    ``module:Name``)."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise PythonRefError(f'expected "file.py:Name" or "package.module:Name", got "{ref}"')
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = (base_dir / target).resolve()
        if not path.is_file():
            raise PythonRefError(f"file {target} not found (looked in {base_dir})")
        module = _load_file(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise PythonRefError(f"cannot import {target}: {exc}") from exc
        except Exception as exc:
            raise PythonRefError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            from coral_graph._errors import suggest

            names = [n for n in dir(obj) if not n.startswith("_")]
            found = suggest(part, names)
            hint = f' — did you mean "{found}"?' if found else ""
            raise PythonRefError(f'{target} has no "{part}"{hint}')
        obj = getattr(obj, part)
    return obj
