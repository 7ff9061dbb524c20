"""CPU backend for verl: platform, device shim, torch adjustments and the ``hf`` rollout.

verl is imported first: its import loads this plugin (:mod:`coact_verl.plugin`), which must find the
registration modules importable, whichever coact-verl module a program imports first.
"""

import verl  # noqa: F401  (see the docstring)
