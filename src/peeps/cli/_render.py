"""Output for the terminal CLI: rich tables when rich is installed and stdout is
a terminal, aligned plain text otherwise (pipes, CI logs, no rich).

Plain text never wraps a cell, so a ``path:line`` stays on one line for grep.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

Style = Literal["auto", "rich", "plain"]

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


@dataclass
class TreeItem:
    """One line of a tree, with its children below it."""

    label: str
    children: list[TreeItem] = field(default_factory=list)
    style: str | None = None

    def add(self, label: str, *, style: str | None = None) -> TreeItem:
        child = TreeItem(label, style=style)
        self.children.append(child)
        return child


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class PlainOutput:
    """Aligned text, no colour, no wrapping."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def line(self, text: str = "", *, style: str | None = None) -> None:
        print(text, file=self.stream)

    def heading(self, text: str) -> None:
        print(text, file=self.stream)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              title: str | None = None, styles: Sequence[str | None] | None = None) -> None:
        if title:
            self.heading(title)
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [len(c) for c in columns]
        for row in cells:
            for i, value in enumerate(row):
                widths[i] = max(widths[i], len(value))

        def fmt(values: Sequence[str]) -> str:
            padded = [v.ljust(widths[i]) if i < len(values) - 1 else v
                      for i, v in enumerate(values)]
            return "  ".join(padded).rstrip()

        print(fmt([c.upper() for c in columns]), file=self.stream)
        for row in cells:
            print(fmt(row), file=self.stream)

    def tree(self, root: TreeItem) -> None:
        print(root.label, file=self.stream)
        self._children(root.children, "")

    def _children(self, children: list[TreeItem], prefix: str) -> None:
        for i, child in enumerate(children):
            last = i == len(children) - 1
            print(f"{prefix}{'└── ' if last else '├── '}{child.label}", file=self.stream)
            self._children(child.children, prefix + ("    " if last else "│   "))


class RichOutput:
    """The same calls, drawn with rich."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=False)

    def line(self, text: str = "", *, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""))

    def heading(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text, style="bold"))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              title: str | None = None, styles: Sequence[str | None] | None = None) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", show_edge=False, header_style="bold",
                      pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for i, row in enumerate(rows):
            style = styles[i] if styles is not None and i < len(styles) else None
            table.add_row(*(Text(_cell(v)) for v in row), style=style)
        self.console.print(table)

    def tree(self, root: TreeItem) -> None:
        from rich.text import Text
        from rich.tree import Tree

        def build(item: TreeItem, into: Tree) -> None:
            for child in item.children:
                build(child, into.add(Text(child.label, style=child.style or "")))

        top = Tree(Text(root.label, style=root.style or "bold"))
        build(root, top)
        self.console.print(top)


Output = PlainOutput | RichOutput


def make_output(style: Style = "auto", stream: TextIO | None = None) -> Output:
    target = stream or sys.stdout
    if style == "plain" or (style == "auto" and not target.isatty()):
        return PlainOutput(target)
    if not rich_available():
        return PlainOutput(target)
    return RichOutput(target)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value).replace("\n", " ")
