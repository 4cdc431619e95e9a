"""``python -m peeps``: ``run`` a program under peeps; any other command goes to
the terminal CLI (``python -m peeps suspects`` is ``peeps suspects``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: python -m peeps run [options] (script.py | -m module) [args ...]
       python -m peeps {ps,tree,suspects,sql,jump} [options]   (the `peeps` CLI)

  run        run a program with peeps on, unchanged (python -m peeps run --help)
  ps ...     ask a running peeps-web what is going on (python -m peeps ps --help)
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=sys.stdout if args else sys.stderr, end="")
        return 0 if args else 2
    if args[0] == "run":
        from ._run import main as run_main

        return run_main(args[1:])
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
