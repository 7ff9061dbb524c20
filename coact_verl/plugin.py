"""Entry point that verl imports in every process (``verl.plugins`` -> ``coact = coact_verl.plugin``).

verl loads it in every process of every job once coact-verl is installed, CoAct or not, so loading it
registers names, not modules:

- verl's name registries that live in heavy modules (trainer modes, reward managers, agent loops,
  rollouts, engines) are filled when verl itself imports the module that holds the registry
  (:func:`when_imported`), and CoAct's names in them are :class:`LazyRegistry` entries whose module is
  imported the first time verl looks the name up;
- only the CPU platform class is registered as it is (verl's platform registry takes classes); it
  detects hardware when verl first asks which platform to use, never at import.

Loud where it matters: a problem with this install (a CoAct module that cannot be imported, a verl
version other than the supported one) makes ``import verl`` log one warning and nothing else, so that
jobs that use no CoAct component run as usual; a job that asks for a CoAct component (the ``coact``
reward manager, a CoAct trainer mode, the ``hf`` rollout or CoAct's agent loop, which the CoAct
configs select) gets :class:`PluginLoadError`, naming the import and the fix.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

# Modules whose ``register()`` declares what the plugin adds to verl, in order. The CPU backend goes
# first so that the platform is registered before any verl module asks which device it runs on.
REGISTRATION_MODULES = ("coact_verl.cpu.registration", "coact_verl.adapters.registration")

#: Set to a module name in a test to simulate a broken install: importing that module fails.
FAIL_ENV = "COACT_VERL_SIMULATE_BROKEN_IMPORT"

FIX = (
    "Reinstall coact-verl with `pip install -e .` in its checkout (or install the package named above); "
    "set VERL_USE_EXTERNAL_PLUGINS=none to run verl without coact-verl."
)


class PluginLoadError(ImportError):
    """A job asked for a CoAct component that this install cannot provide; the message says why and the fix."""


#: What is wrong with this install, found while verl loaded the plugin (reported once, raised on use).
problems: list[str] = []
#: Module -> the CoAct component it provides, for every module the plugin imports only on demand.
lazy_modules: dict[str, str] = {}


def load_module(module_name: str, component: str) -> ModuleType:
    """Import a CoAct module on behalf of ``component``; raise :class:`PluginLoadError` if it cannot be."""
    if problems:
        message = f"coact-verl cannot provide {component}: " + "; ".join(problems) + ". " + FIX
        sys.stderr.write(message + "\n")
        raise PluginLoadError(message)
    try:
        return importlib.import_module(module_name)
    except PluginLoadError:
        raise
    except Exception as error:
        message = (
            f"coact-verl cannot provide {component}: importing {module_name} raised "
            f"{type(error).__name__}: {error}. {FIX}"
        )
        sys.stderr.write(message + "\n")
        raise PluginLoadError(message) from error


def lazy_import(module_name: str, component: str, attribute: str | None = None) -> Callable[[], Any]:
    """A function that imports ``module_name`` (returning ``attribute`` of it) the first time it is called."""
    lazy_modules.setdefault(module_name, component)

    def load() -> Any:
        module = load_module(module_name, component)
        return getattr(module, attribute) if attribute else module

    return load


# --------------------------------------------------------------------------- registries


class LazyRegistry(dict):
    """One of verl's name registries (a plain ``dict``) whose CoAct names load on first lookup.

    ``lazy`` maps a name to a function that imports the module whose own registration decorator adds
    the name. Lookups (``in``, ``[]``, ``get``) call it the first time; while it runs, the name reads as
    absent, so that the decorator's "already registered?" check passes. Iteration and ``len`` see only
    the names loaded so far.
    """

    def __init__(self, entries: dict, lazy: dict[Any, Callable[[], Any]] | None = None) -> None:
        super().__init__(entries)
        self.lazy: dict[Any, Callable[[], Any]] = dict(lazy or {})
        self._loading: set = set()

    def _load(self, key: Any) -> bool:
        if dict.__contains__(self, key):
            return True
        load = self.lazy.get(key)
        if load is None or key in self._loading:
            return False
        self._loading.add(key)
        try:
            load()
        finally:
            self._loading.discard(key)
        if dict.__contains__(self, key):
            self.lazy.pop(key, None)
            return True
        return False  # the module is being imported right now; its decorator adds the name next

    def __contains__(self, key: object) -> bool:
        return self._load(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.lazy.pop(key, None)  # registered by other means (its module was imported directly)
        super().__setitem__(key, value)

    def __missing__(self, key: Any) -> Any:
        if self._load(key):
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.__getitem__(self, key) if self._load(key) else default

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


def register_lazy_names(registry_module: str, attribute: str, names: dict[str, str], kind: str) -> None:
    """Make ``names`` (name -> module whose import registers it) resolvable in ``registry_module.attribute``."""
    loaders = {name: lazy_import(module, f"{kind} {name!r}") for name, module in names.items()}

    def install(module: ModuleType) -> None:
        registry = getattr(module, attribute)
        if not isinstance(registry, LazyRegistry):
            registry = LazyRegistry(registry)
            setattr(module, attribute, registry)
        for name, load in loaders.items():
            if not dict.__contains__(registry, name):
                registry.lazy[name] = load

    when_imported(registry_module, install)


# --------------------------------------------------------------------------- post-import hooks


def _initializing(module: ModuleType) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _HookedLoader(importlib.abc.Loader):
    """Wraps a module's loader to run callbacks once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader, on_loaded: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.on_loaded = on_loaded

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader  # the module keeps its real loader (source, resources)
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)  # type: ignore[attr-defined]
        self.on_loaded(module)


class _PostImportHooks(importlib.abc.MetaPathFinder):
    """Runs callbacks right after named modules are imported (for the first time) in this process."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[ModuleType], None]]] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.callbacks:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _PostImportHooks):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, lambda module: self._run(fullname, module))
        return spec

    def _run(self, fullname: str, module: ModuleType) -> None:
        for callback in self.callbacks.pop(fullname, []):
            _run_callback(callback, module)


def _run_callback(callback: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        callback(module)
    except Exception as error:  # never break verl's own import
        problem = f"registering with {module.__name__} raised {type(error).__name__}: {error}"
        problems.append(problem)
        logger.warning("coact-verl: %s. %s", problem, FIX)


def _hooks() -> _PostImportHooks:
    for finder in sys.meta_path:
        if isinstance(finder, _PostImportHooks):
            return finder
    finder = _PostImportHooks()
    sys.meta_path.insert(0, finder)
    return finder


def when_imported(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported: now if it already is, else right after."""
    module = sys.modules.get(module_name)
    if module is not None and not _initializing(module):
        _run_callback(callback, module)
    else:
        _hooks().callbacks.setdefault(module_name, []).append(callback)


# --------------------------------------------------------------------------- load


class _SimulatedBrokenModule(importlib.abc.MetaPathFinder):
    def __init__(self, module_name: str) -> None:
        self.module_name = module_name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.module_name:
            raise ImportError(f"simulated broken install of {fullname} ({FAIL_ENV})")
        return None


def _check_verl_version() -> None:
    from importlib.metadata import version

    from coact_verl import VERL_VERSION

    installed = version("verl")
    if installed != VERL_VERSION:
        problems.append(
            f"it supports verl=={VERL_VERSION}, but verl=={installed} is installed "
            f"(run `pip install 'verl[verl-core]=={VERL_VERSION}'`)"
        )


def _check_importable(module_names: Iterable[str]) -> None:
    """Find (without importing) every module the plugin imports on demand."""
    for module_name in module_names:
        try:
            found = importlib.util.find_spec(module_name) is not None
        except Exception as error:
            problems.append(f"importing {module_name} raised {type(error).__name__}: {error}")
            continue
        if not found:
            problems.append(f"importing {module_name} raised ModuleNotFoundError: no module named {module_name!r}")


def load() -> None:
    """Register with verl; on any problem log one warning and let verl start (components raise on use)."""
    simulated = os.environ.get(FAIL_ENV)
    if simulated and not any(isinstance(f, _SimulatedBrokenModule) for f in sys.meta_path):
        sys.meta_path.insert(0, _SimulatedBrokenModule(simulated))
    try:
        _check_verl_version()
    except Exception as error:
        problems.append(f"checking the verl version raised {type(error).__name__}: {error}")
    for module_name in REGISTRATION_MODULES:
        try:
            importlib.import_module(module_name).register()
        except Exception as error:
            problems.append(f"importing {module_name} raised {type(error).__name__}: {error}")
    _check_importable(lazy_modules)
    if problems:
        logger.warning(
            "coact-verl is not usable in this process: %s. verl runs without it; a job that asks for a CoAct "
            "component fails. %s",
            "; ".join(problems),
            FIX,
        )


load()
