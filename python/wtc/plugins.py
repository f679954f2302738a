"""Plug-ins: modules that register models, metrics or data sets from outside the package.

A registration made in one process is unknown to the processes a sweep starts, so plug-ins are
named where every process can read them, and every ``wtc`` command imports them first:

- ``WTC_PLUGINS``: comma-separated module names (importable from ``sys.path``) or ``.py`` file
  paths, e.g. ``WTC_PLUGINS=mylab.models,/home/me/bars.py wtc sweep spec.toml --out s``;
- the ``wtc.plugins`` entry-point group of installed packages
  (``[project.entry-points."wtc.plugins"] mylab = "mylab.wtc_plugin"``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

ENV = "WTC_PLUGINS"
ENTRY_POINT_GROUP = "wtc.plugins"
_loaded: set = set()


class PluginError(ImportError):
    """A plug-in named in WTC_PLUGINS or an entry point that cannot be imported."""


def _import_file(path: Path):
    name = f"wtc_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_plugins() -> list:
    """Import every plug-in once (later calls import only new ones); the names imported."""
    names = [("env", item.strip()) for item in os.environ.get(ENV, "").split(",") if item.strip()]
    names += [("entry point", ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    done = []
    for source, name in names:
        if name in _loaded:
            continue
        try:
            if name.endswith(".py"):
                path = Path(name).expanduser().resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                _import_file(path)
            else:
                importlib.import_module(name)
        except Exception as err:
            where = f"{ENV}" if source == "env" else f"the {ENTRY_POINT_GROUP} entry point"
            raise PluginError(f"cannot import the plug-in {name!r} named in {where}: "
                              f"{type(err).__name__}: {err}") from err
        _loaded.add(name)
        done.append(name)
    return done
