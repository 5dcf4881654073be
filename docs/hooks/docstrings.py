"""Plain-text docstrings as Markdown, for the method pages the docs build generates.

The project's docstrings are plain text: paragraphs, indented formulas, `- ` or `1. ` lists
and `term  description` lists (a method's settings). This turns each of those into its
Markdown form and escapes the rest, so that a formula's `*` or a `<pad>` shows as written.
"""

from __future__ import annotations

import itertools
import re

BULLET = re.compile(r"^(?P<indent>\s*)(?P<mark>[-*]|\d+\.)\s+(?P<text>\S.*)$")
TERM = re.compile(r"^(?P<indent>\s+)(?P<term>[A-Za-z_][\w.-]*(?:, [A-Za-z_][\w.-]*)*)\s{2,}"
                  r"(?P<text>\S.*)$")
CODE_SPAN = re.compile(r"(`[^`]*`)")
SPECIAL = re.compile(r"([\\*_\[\]])")


def inline(text: str) -> str:
    """Prose with Markdown's special characters escaped outside `code spans`."""
    parts = CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = SPECIAL.sub(r"\\\1", parts[i]).replace("<", "&lt;")
    return "".join(parts)


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def code_block(lines: list[str]) -> list[str]:
    depth = min(indent_of(line) for line in lines if line.strip())
    return ["```text", *(line[depth:] for line in lines), "```", ""]


def list_block(lines: list[str]) -> tuple[list[str], int]:
    """Items that start at the first line's indent; deeper lines continue an item (a line
    deeper than the item's text is a formula, shown as code under the item). Returns the
    Markdown and the column where the items' text starts."""
    base = indent_of(lines[0])
    first = BULLET.match(lines[0]) or TERM.match(lines[0])
    column = first.start("text") if first else base + 2
    items: list[tuple[str, list[tuple[bool, str]]]] = []  # (mark, [(is formula, line)])
    for line in lines:
        bullet, term = BULLET.match(line), TERM.match(line)
        if indent_of(line) == base and bullet:
            items.append((bullet.group("mark"), [(False, bullet.group("text"))]))
        elif indent_of(line) == base and term:
            items.append(("-", [(False, f"`{term.group('term')}`: {term.group('text')}")]))
        elif items:
            items[-1][1].append((indent_of(line) > column + 1, line))
    out: list[str] = []
    for mark, pieces in items:
        head = f"{mark if mark[0].isdigit() else '-'} "
        for formula, group in itertools.groupby(pieces, key=lambda piece: piece[0]):
            lines_of = [line for _, line in group]
            if formula:
                out += ["", *(f"    {line}" if line else "" for line in code_block(lines_of))]
                head = "    "
            else:
                out.append(head + inline(" ".join(line.strip() for line in lines_of)))
                head = "    "
    return [*out, ""], column


def is_list_start(line: str) -> bool:
    return bool(BULLET.match(line) or TERM.match(line)) and indent_of(line) > 0


def continuation(lines: list[str], column: int) -> list[str]:
    """Lines that continue the last list item after a blank line, indented under it: prose
    at the item's text column, a formula deeper."""
    if all(indent_of(line) == column for line in lines):
        body = [inline(" ".join(line.strip() for line in lines)), ""]
    else:
        body = code_block(lines)
    return [f"    {line}" if line else "" for line in body]


def to_markdown(doc: str) -> str:
    """The docstring as Markdown (see the module's docstring)."""
    out: list[str] = []
    in_list: tuple[int, int] | None = None  # (indent, text column) of the list just written

    def indented(group: list[str]) -> None:
        nonlocal in_list
        if in_list is not None and min(map(indent_of, group)) >= in_list[0]:
            base, column = in_list
            k = next((i for i, line in enumerate(group)
                      if indent_of(line) == base and is_list_start(line)), len(group))
            if k:
                out.extend(continuation(group[:k], column))
            group = group[k:]
        if group and is_list_start(group[0]):
            rendered, column = list_block(group)
            out.extend(rendered)
            in_list = (indent_of(group[0]), column)
        elif group:
            out.extend(code_block(group))

    blocks: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    for block in filter(None, blocks):
        for flush, group in itertools.groupby(block, key=lambda line: indent_of(line) == 0):
            lines = list(group)
            if flush:
                out.extend([inline(" ".join(line.strip() for line in lines)), ""])
                in_list = None
            else:
                indented(lines)
    return "\n".join(out).strip() + "\n"
