"""Entry point that verl imports in every process (``verl.plugins`` -> ``coact = coact_verl.plugin``).

It registers the CPU backend (platform, engines, ``hf`` rollout) and every CoAct component with verl's
registries. verl's loader swallows exceptions from a plugin at DEBUG level, which would turn a broken
install into a confusing "unknown reward manager" much later; this module therefore raises
:class:`PluginLoadError`, which derives from ``BaseException`` so that verl's ``except Exception`` does
not hide it, with a message that names the failing import.
"""

from __future__ import annotations

import importlib
import os
import sys

# Modules whose import registers something with verl, in order. The CPU backend goes first so that
# the platform exists before any verl module asks which device it runs on.
REGISTRATION_MODULES = ("coact_verl.cpu.registration", "coact_verl.adapters.registration")

#: Set to "1" in a test to simulate a broken install (a module that fails to import).
FAIL_ENV = "COACT_VERL_SIMULATE_BROKEN_IMPORT"


class PluginLoadError(BaseException):
    """coact-verl could not register with verl; the message names the import that failed."""


def _check_verl_version() -> None:
    from importlib.metadata import version

    from coact_verl import VERL_VERSION

    installed = version("verl")
    if installed != VERL_VERSION:
        raise PluginLoadError(
            f"coact-verl supports verl=={VERL_VERSION}, but verl=={installed} is installed; "
            f"run `pip install 'verl[verl-core]=={VERL_VERSION}'`"
        )


def load() -> None:
    """Import every registration module; raise :class:`PluginLoadError` naming the cause on failure."""
    _check_verl_version()
    for module_name in REGISTRATION_MODULES:
        try:
            if os.environ.get(FAIL_ENV) == module_name:
                raise ImportError(f"simulated broken install of {module_name} ({FAIL_ENV})")
            module = importlib.import_module(module_name)
            module.register()
        except PluginLoadError:
            raise
        except Exception as error:
            message = (
                f"coact-verl failed to register with verl: importing {module_name} raised "
                f"{type(error).__name__}: {error}. Reinstall with `pip install -e .` (or check the "
                f"package named above); set VERL_USE_EXTERNAL_PLUGINS=none to start verl without coact-verl."
            )
            sys.stderr.write(message + "\n")
            raise PluginLoadError(message) from error


load()
