"""``peeps-web`` / ``python -m peeps.web`` entry point."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ._server import main as server_main

    return server_main(argv)


if __name__ == "__main__":
    sys.exit(main())
