"""``peeps`` console script and ``python -m peeps.cli``."""

from __future__ import annotations

import sys

from ._main import main as main

if __name__ == "__main__":
    sys.exit(main())
