"""``python -m coact_verl.oracle serve ...``."""

import sys

from coact_verl.oracle.cli import main

sys.exit(main())
