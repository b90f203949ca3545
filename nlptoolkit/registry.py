"""The task registry: where task plugins announce themselves and are found.

Like spaCy's ``catalogue``, a task is registered by name with a decorator, and
plugins are discovered from three places:

1. the entry-point group ``nlptoolkit.plugins`` of installed packages (the
   built-in tasks in ``plugins/``, installed as ``nlptoolkit_plugins``, use this
   too, exactly as a third party would);
2. the ``plugins:`` list of a recipe (file paths or importable module names);
3. ``nlptk --plugin PATH`` on the command line.

The core never imports a plugin by name: it only asks this registry.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from nlptoolkit.errors import NlptkError, did_you_mean

ENTRY_POINT_GROUP = "nlptoolkit.plugins"

# Which plugin is being imported right now, so that `@register_task` can record
# where a task came from without the plugin having to say so.
_loading_source: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("source", default=None)


@dataclass
class TaskEntry:
    name: str
    cls: type
    source: str

    @property
    def description(self) -> str:
        return getattr(self.cls, "description", "") or (self.cls.__doc__ or "").strip().split("\n")[0]


class Registry:
    def __init__(self) -> None:
        self.tasks: Dict[str, TaskEntry] = {}
        self.probes: Dict[str, Callable[[str], Sequence[float]]] = {}  # added by plugins (`nlptk inspect`)
        self.failures: Dict[str, str] = {}  # plugin source -> one-line reason it failed to load
        self._entry_points_loaded = False

    # -- registration ------------------------------------------------------
    def add(self, name: str, cls: type, source: str) -> None:
        old = self.tasks.get(name)
        if old is not None and old.cls is not cls:
            raise NlptkError(
                f"task '{name}' is registered twice: by {old.source} and by {source}; "
                "rename one of them or load only one of the plugins"
            )
        if old is None:
            self.tasks[name] = TaskEntry(name, cls, source)

    @contextlib.contextmanager
    def _source(self, source: str) -> Iterator[None]:
        token = _loading_source.set(source)
        try:
            yield
        finally:
            _loading_source.reset(token)

    # -- discovery ---------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every installed plugin; a broken one is recorded, not fatal."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            source = f"entry point '{ep.name}' ({ep.value}" + (f", package {dist.name})" if dist else ")")
            try:
                with self._source(source):
                    obj = ep.load()
            except NlptkError:
                raise
            except Exception as exc:  # a broken third-party plugin must not take the others down
                self.failures[source] = f"{type(exc).__name__}: {exc}"
                continue
            if isinstance(obj, type) and not any(e.cls is obj for e in self.tasks.values()):
                self.add(ep.name, obj, source)

    def load_plugin(self, spec: str) -> None:
        """Load a plugin from a ``.py`` file path or an importable module name."""
        looks_like_file = spec.endswith(".py") or "/" in spec or "\\" in spec
        if looks_like_file:
            path = Path(spec)
            if not path.is_file():
                raise NlptkError(f"plugin file {spec} does not exist; give a path to a .py file (relative to the current folder) or a module name")
            module_name = f"nlptk_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
            if module_name in sys.modules:
                return
            source = f"plugin file {spec}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                with self._source(source):
                    module_spec.loader.exec_module(module)
            except SyntaxError as exc:
                del sys.modules[module_name]
                raise NlptkError(f"{spec}:{exc.lineno}: syntax error in plugin file: {exc.msg}; fix the file and try again") from exc
            except NlptkError:
                del sys.modules[module_name]
                raise
            except Exception as exc:
                del sys.modules[module_name]
                raise NlptkError(f"plugin file {spec} failed to import: {type(exc).__name__}: {exc}") from exc
        else:
            source = f"plugin module {spec}"
            try:
                with self._source(source):
                    importlib.import_module(spec)
            except ModuleNotFoundError as exc:
                raise NlptkError(f"plugin module '{spec}' was not found ({exc}); give a .py file path or an installed module name") from exc
            except SyntaxError as exc:
                raise NlptkError(f"{exc.filename}:{exc.lineno}: syntax error in plugin module '{spec}': {exc.msg}") from exc
            except NlptkError:
                raise
            except Exception as exc:
                raise NlptkError(f"plugin module '{spec}' failed to import: {type(exc).__name__}: {exc}") from exc

    # -- lookup ------------------------------------------------------------
    def get(self, name: str) -> type:
        self.load_entry_points()
        if name in self.tasks:
            return self.tasks[name].cls
        available = ", ".join(sorted(self.tasks)) or "none"
        broken = f"; plugins that failed to load: {', '.join(self.failures)}" if self.failures else ""
        raise NlptkError(
            f"unknown task '{name}'{did_you_mean(name, self.tasks)}. Available tasks: {available}{broken}. "
            f"To add one, list a plugin file or module under `plugins:` in the recipe, pass `nlptk --plugin PATH`, "
            f"or pip-install a package that declares an entry point in group '{ENTRY_POINT_GROUP}'"
        )

    def entries(self) -> List[TaskEntry]:
        self.load_entry_points()
        return [self.tasks[k] for k in sorted(self.tasks)]

    def all_probes(self) -> Dict[str, Callable[[str], Sequence[float]]]:
        """The built-in probes of `nlptk inspect --find`, then those plugins registered."""
        from nlptoolkit.inspection.probes import BUILTIN_PROBES

        self.load_entry_points()
        return {**BUILTIN_PROBES, **self.probes}


registry = Registry()


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator that makes a :class:`~nlptoolkit.task.Task` available to recipes.

    >>> @register_task("sentiment")
    ... class SentimentTask(Task): ...
    """

    def decorate(cls: type) -> type:
        cls.name = name
        registry.add(name, cls, _loading_source.get() or f"module {cls.__module__}")
        return cls

    return decorate


def register_probe(name: str) -> Callable[[Callable[[str], Sequence[float]]], Callable[[str], Sequence[float]]]:
    """Function decorator that adds a probe to `nlptk inspect --find`: text in, one number per character out.

    >>> @register_probe("vowel")
    ... def vowel(text): return [float(ch in "aeiou") for ch in text]
    """

    def decorate(fn: Callable[[str], Sequence[float]]) -> Callable[[str], Sequence[float]]:
        from nlptoolkit.inspection.probes import BUILTIN_PROBES

        if name in BUILTIN_PROBES or (name in registry.probes and registry.probes[name] is not fn):
            raise NlptkError(f"probe '{name}' is registered twice ({_loading_source.get() or fn.__module__}); give it another name")
        registry.probes[name] = fn
        return fn

    return decorate
