"""``peeps``: the terminal CLI over a running ``peeps-web`` (its public HTTP API).

    peeps ps | tree | suspects | sql "SELECT ..." | jump   [--http ADDR] [--snapshot ID] [--json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._client import DEFAULT_HTTP, ENV_HTTP, EXIT_UNAVAILABLE, CliError, PeepsClient
from ._commands import Context, cmd_jump, cmd_ps, cmd_sql, cmd_suspects, cmd_tree
from ._render import make_output


def _common() -> argparse.ArgumentParser:
    # Defaults are SUPPRESS so an option given before the command is not
    # overwritten by the subcommand parser's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--http", metavar="ADDR", default=argparse.SUPPRESS,
                        help=f"peeps-web HTTP address (default: ${ENV_HTTP} or {DEFAULT_HTTP})")
    common.add_argument("--snapshot", metavar="ID", type=int, default=argparse.SUPPRESS,
                        help="snapshot to read (default: the newest)")
    common.add_argument("--jump", action="store_true", default=argparse.SUPPRESS,
                        help="take a fresh snapshot first and read that one")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts instead of tables")
    style = common.add_mutually_exclusive_group()
    style.add_argument("--plain", dest="style", action="store_const", const="plain",
                       default=argparse.SUPPRESS, help="plain text even on a terminal")
    style.add_argument("--rich", dest="style", action="store_const", const="rich",
                       default=argparse.SUPPRESS, help="rich tables even when piped")
    common.add_argument("--timeout", metavar="SECONDS", type=float, default=argparse.SUPPRESS,
                        help="HTTP timeout (default 30)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="peeps", parents=[common],
        description="Ask a running peeps-web what your processes are waiting on.",
        epilog="Exit codes: 0 ok; 1 suspects found with --fail-on; 2 no server, no snapshot "
               "or a refused request.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ps = sub.add_parser("ps", parents=[common], help="processes and their tasks/threads")
    ps.add_argument("--all", action="store_true",
                    help="include finished tasks and peeps' own threads")
    tree = sub.add_parser("tree", parents=[common],
                          help="tasks by who spawned whom, with what each needs")
    tree.add_argument("--stack", action="store_true", help="show each task's await stack")
    tree.add_argument("--all", action="store_true",
                      help="include finished tasks and peeps' own threads")
    suspects = sub.add_parser("suspects", parents=[common],
                              help="ranked findings: deadlocks, long waits, full channels")
    suspects.add_argument("--fail-on", choices=["critical", "warning", "info"],
                          help="exit 1 when a suspect of this severity or worse exists")
    sql = sub.add_parser("sql", parents=[common], help="run a read-only SQL query on a snapshot")
    sql.add_argument("query", help="one SELECT over nodes, edges, events, snapshot_processes")
    sql.add_argument("-p", "--param", action="append", default=[], metavar="VALUE",
                     help="a ? parameter (JSON, else a string); repeatable")
    sub.add_parser("jump", parents=[common], help="take a snapshot of every connected process now")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_UNAVAILABLE
    ctx = Context(
        client=PeepsClient(getattr(args, "http", None), timeout_s=getattr(args, "timeout", 30.0)),
        out=make_output(getattr(args, "style", "auto")),
        json=getattr(args, "json", False),
        snapshot_id=getattr(args, "snapshot", None),
        jump=getattr(args, "jump", False),
    )
    try:
        if args.command == "ps":
            return cmd_ps(ctx, show_all=args.all)
        if args.command == "tree":
            return cmd_tree(ctx, show_stack=args.stack, show_all=args.all)
        if args.command == "suspects":
            return cmd_suspects(ctx, fail_on=args.fail_on)
        if args.command == "sql":
            return cmd_sql(ctx, query=args.query, params=args.param)
        return cmd_jump(ctx)
    except CliError as exc:
        print(f"peeps: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `peeps ps | head`
        return 0

