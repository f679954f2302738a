"""The data-set registry: every fact about a data set, declared once beside its loader.

A data set is a name, a loader (usually a :class:`GroundTruthDataset` subclass), the file or
folder to find and the sub-folders users keep it in (none for a procedural set), its procedural
look-alike, its factors where they are fixed, and its options. Every list of names, every
command-line flag and every missing-file message is derived from here::

    from wtc.data import Option, register_dataset

    @register_dataset("bars", options=[Option("rows", int, 4, help="rows of bars")])
    class Bars(GroundTruthDataset):
        def __init__(self, rows=4): ...

    wtc.data.load("bars", rows=3)       # and `wtc data bars --rows 3`

Options are what the command line (``wtc data``, ``wtc train``) and sweep specs pass on: each
becomes one flag, shared by the data sets that declare an option of that name. A loader's other
keyword arguments (``in_memory``, ``cache_dir``, ...) are accepted from Python only.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ORDER = itertools.count()


@dataclass(frozen=True)
class Option:
    """One option of ``load`` that the command line and sweep specs pass on.

    ``type`` parses the flag's text; ``choices``, when given, are checked by ``load`` too;
    ``default`` is the loader's own (it fills the file name's ``{name}`` fields and the help).
    """

    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    choices: tuple | None = None
    help: str = ""
    # Flags are listed in the order their options are declared, as argparse lists arguments.
    order: int = field(default_factory=lambda: next(_ORDER), compare=False, repr=False)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class DataSetEntry:
    """A registered data set. ``file`` (None for a procedural set) may hold ``{option}`` fields,
    as may ``folders``; ``open_folder``: the loader gets the folder holding ``file`` rather than
    the file itself (the data set is several files beside it)."""

    name: str
    loader: Callable[..., Any]
    file: str | None = None
    folders: tuple[str, ...] = ()
    open_folder: bool = False
    lookalike: str | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    options: tuple[Option, ...] = ()

    @property
    def procedural(self) -> bool:
        return self.file is None

    def keyword_arguments(self) -> tuple[str, ...] | None:
        """Every keyword ``load`` accepts for this set: its options, then the loader's other
        keyword parameters; None when the loader takes ``**kwargs``."""
        names = [o.name for o in self.options]
        params = list(_parameters(self.loader))
        if not self.procedural and params:
            params = params[1:]  # the path or folder, which load passes
        for p in params:
            if p.kind == p.VAR_KEYWORD:
                return None
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
        return tuple(names)


DATASETS: dict[str, DataSetEntry] = {}

# Options renamed since they were first declared: old name -> new name. The old names are still
# accepted (``load``, sweep specs' data_options, the command line) with a deprecation message.
RENAMED_OPTIONS = {"step": "grid_step"}


def deprecation(old: str) -> str:
    """The message for a renamed option, naming both spellings of each."""
    new = RENAMED_OPTIONS[old]
    return (f"the data set option '{old}' (--{old.replace('_', '-')}) is deprecated: use "
            f"'{new}' (--{new.replace('_', '-')}) instead")


def renamed_options(options: dict) -> dict:
    """``options`` with each deprecated name replaced by its new one, warning once per call
    (a FutureWarning: users see it, unlike a DeprecationWarning)."""
    import warnings

    out = dict(options)
    for old, new in RENAMED_OPTIONS.items():
        if old in out:
            value = out.pop(old)
            if new in out and out[new] != value:
                from wtc.data.base import DataSetError

                raise DataSetError(f"both '{old}' and '{new}' are given; '{old}' is the old name "
                                   f"of '{new}': pass '{new}' only")
            out.setdefault(new, value)
            warnings.warn(deprecation(old), FutureWarning, stacklevel=3)
    return out


def _parameters(loader):
    try:
        return inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: take anything
        return [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def register_dataset(name: str, loader: Callable | None = None, *, file: str | None = None,
                     folders: Sequence[str] = (), open_folder: bool = False,
                     lookalike: str | None = None, factor_names: Sequence[str] | None = None,
                     factor_sizes: Sequence[int] | None = None, options: Sequence[Option] = (),
                     replace: bool = False):
    """Register a data set; with no ``loader``, a class decorator. Factor names and sizes
    default to the loader's class attributes. Returns the loader."""
    if loader is None:
        return lambda cls: register_dataset(
            name, cls, file=file, folders=folders, open_folder=open_folder, lookalike=lookalike,
            factor_names=factor_names, factor_sizes=factor_sizes, options=options,
            replace=replace)
    if name in DATASETS and not replace:
        raise ValueError(f"data set {name!r} is already registered (by "
                         f"{_describe(DATASETS[name].loader)}); pass replace=True to replace it")
    entry = DataSetEntry(
        name=name, loader=loader, file=file, folders=tuple(folders), open_folder=open_folder,
        lookalike=lookalike,
        factor_names=tuple(factor_names if factor_names is not None
                           else getattr(loader, "factor_names", ())),
        factor_sizes=tuple(factor_sizes if factor_sizes is not None
                           else getattr(loader, "factor_sizes", ())),
        options=tuple(options))
    _check(entry)
    DATASETS[name] = entry
    return loader


def unregister_dataset(name: str) -> None:
    """Remove a registered data set (for tests and plug-ins that register temporarily)."""
    DATASETS.pop(name, None)


def _describe(loader) -> str:
    return f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', loader)}"


def _check(entry: DataSetEntry) -> None:
    """Mistakes a registration can make, caught when it is made rather than when it is used."""
    names = [o.name for o in entry.options]
    if len(set(names)) != len(names):
        raise ValueError(f"data set {entry.name!r} declares an option twice: {names}")
    if entry.folders and entry.file is None:
        raise ValueError(f"data set {entry.name!r}: folders without a file to find in them")
    defaults = {p.name: p.default for p in _parameters(entry.loader)
                if p.default is not inspect.Parameter.empty}
    for option in entry.options:
        if not option.name.isidentifier():
            raise ValueError(f"data set {entry.name!r}: option name {option.name!r} is not a "
                             "Python identifier")
        # One flag serves every data set taking an option of this name: they must agree.
        for other in DATASETS.values():
            for o in other.options:
                if o.name == option.name and other.name != entry.name and (
                        o.type is not option.type or o.choices != option.choices):
                    raise ValueError(
                        f"data set {entry.name!r}: option {option.name!r} differs in type or "
                        f"choices from {other.name!r}'s, and both would share {option.flag}")
        if option.name in defaults and defaults[option.name] != option.default:
            raise ValueError(
                f"data set {entry.name!r}: option {option.name!r} declares default "
                f"{option.default!r} but {_describe(entry.loader)} defaults to "
                f"{defaults[option.name]!r}")


def get(name: str) -> DataSetEntry:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Every data set: those read from files first, then the procedural ones, each group in
    the order registered."""
    return tuple(sorted(DATASETS, key=lambda n: DATASETS[n].procedural))


def cli_options() -> dict[str, tuple[Option, tuple[str, ...]]]:
    """Each option name -> (its declaration, the data sets that take it), in declaration order."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for name in names():
        for option in DATASETS[name].options:
            found.setdefault(option.name, (option, []))[1].append(name)
    ordered = sorted(found.values(), key=lambda item: item[0].order)
    return {option.name: (option, tuple(sets)) for option, sets in ordered}


def check_options(name: str, options: dict) -> None:
    """A DataSetError naming an option the data set does not take, or a value not among an
    option's choices; what ``load`` checks before opening anything."""
    # Late: base declares its options with this module, so this module cannot import it first.
    from wtc.data.base import DataSetError

    entry = get(name)
    accepted = entry.keyword_arguments()
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            flags = {o.name: o.flag for _, (o, _) in cli_options().items()}
            shown = ", ".join(f"{k!r}" + (f" ({flags[k]})" if k in flags else "")
                              for k in unknown)
            declared = [o.name for o in entry.options]
            python_only = [k for k in accepted if k not in declared]
            takes = "; ".join(part for part in (
                ", ".join(declared),
                "from Python only: " + ", ".join(python_only) if python_only else "")
                if part) or "no options"
            raise DataSetError(f"{name} does not take the option{'s' * (len(unknown) > 1)} "
                               f"{shown}; {name} takes: {takes}")
    for option in entry.options:
        value = options.get(option.name)
        if value is not None and option.choices is not None and value not in option.choices:
            raise DataSetError(f"{name}: {option.name} must be one of "
                               f"{', '.join(map(str, option.choices))}, got {value!r}")


def _fields(entry: DataSetEntry, options: dict) -> dict:
    values = {o.name: o.default for o in entry.options}
    values.update({k: v for k, v in options.items() if v is not None})
    return values


def file_and_folders(entry: DataSetEntry, options: dict) -> tuple[str, list[str]]:
    """The file name and sub-folders to look in, with the options' values filled in."""
    values = _fields(entry, options)
    return entry.file.format(**values), [f.format(**values) for f in entry.folders]


def open_dataset(entry: DataSetEntry, path: Path | None, options: dict):
    """Call the loader: with the found path (or its folder) for a set read from files."""
    if entry.procedural:
        return entry.loader(**options)
    return entry.loader(path.parent if entry.open_folder else path, **options)
