"""Masking secrets in a run's output (SPEC §17): every occurrence of a used secret's value becomes `***`.

Rules: each line of a multi-line value is masked on its own (output is masked line by line, so a
value's lines can only ever show up one per output line), a trailing `\\r` of a value's line is not part
of it (a `\\r\\n` line end), and only lines of at least MIN_CHARS characters are masked (masking `a` or
`42` everywhere would make the log unreadable and tell a reader the value anyway). Longer values win:
leftmost occurrence first, and at one position the longest value there, masked whole — what one regex
alternation of the values, longest first, does (Python's `re` takes the first alternative that matches).

How: each value is found with `bytes.find`/`str.find` (C, a fast substring search), and the occurrences
are then taken left to right, longest first at a position. Measured (BENCHMARKS.md, "Secrets: masking")
that is 1.5–4× the throughput of the compiled alternation, which `re` tries position by position.
Output that holds a value very often (a hostile `aaaa…` against a value `aaa`) would make that list of
occurrences long: past FIND_LIMIT in one piece of data the compiled alternation does it in one pass,
linear in the data whatever it holds.

One pattern for bytes (the local executor masks the raw pipe bytes, before they are decoded and split
into 16 KiB pieces, see executors/lines.py) and one for text (lines an agent sends). This module
imports nothing of runsvc: the agent process uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import AnyStr

MASK = "***"
MIN_CHARS = 3  # shorter lines of a value are not masked
FIND_LIMIT = 256  # occurrences in one piece of data past which the compiled alternation takes over


def value_lines(values: Iterable[str]) -> list[str]:
    """The distinct lines of `values` that are masked, longest first (by UTF-8 bytes, then text)."""
    lines: set[str] = set()
    for value in values:
        for line in value.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if len(line) >= MIN_CHARS:
                lines.add(line)
    return sorted(lines, key=lambda line: (-len(line.encode()), line))


def _spans(data: AnyStr, needles: Sequence[AnyStr], pattern: re.Pattern[AnyStr]) -> list[tuple[int, int]]:
    """(start, end) of each occurrence masked in `data`, left to right, without overlaps: the leftmost
    occurrence first and, at one position, the longest needle — exactly `pattern`'s matches."""
    found: list[tuple[int, int]] = []  # (start, -length): sorted, the longest comes first at a position
    find = data.find
    for needle in needles:
        at = find(needle)
        while at != -1:
            found.append((at, -len(needle)))
            if len(found) > FIND_LIMIT:
                return [match.span() for match in pattern.finditer(data)]
            at = find(needle, at + 1)
    if not found:
        return []
    found.sort()
    spans = []
    cursor = 0
    for start, negative_length in found:
        if start >= cursor:
            cursor = start - negative_length
            spans.append((start, cursor))
    return spans


def _masked(data: AnyStr, spans: list[tuple[int, int]], mask: AnyStr) -> AnyStr:
    parts = []
    position = 0
    for start, end in spans:
        parts.append(data[position:start])
        parts.append(mask)
        position = end
    parts.append(data[position:])
    return data[:0].join(parts)


class Masker:
    """Masks the values given at construction in bytes (`mask_bytes`) and text (`mask_text`).

    `longest_bytes` is the UTF-8 length of the longest masked line: a streaming caller that cannot see a
    whole line yet keeps at least `longest_bytes - 1` bytes unmasked at its end (an occurrence may
    continue there) — see executors/lines.py."""

    __slots__ = ("_bytes", "_bytes_pattern", "_text", "_text_pattern", "longest_bytes")

    def __init__(self, values: Iterable[str]):
        lines = value_lines(values)
        self.longest_bytes = len(lines[0].encode()) if lines else 0
        self._text = lines
        self._bytes = [line.encode() for line in lines]
        self._text_pattern = re.compile("|".join(re.escape(line) for line in lines))
        self._bytes_pattern = re.compile(b"|".join(re.escape(line) for line in self._bytes))

    def __bool__(self) -> bool:
        """Whether there is anything to mask."""
        return bool(self._bytes)

    def mask_bytes(self, data: bytes) -> bytes:
        if not self._bytes:
            return data
        spans = _spans(data, self._bytes, self._bytes_pattern)
        return _masked(data, spans, b"***") if spans else data

    def mask_text(self, text: str) -> str:
        if not self._text:
            return text
        spans = _spans(text, self._text, self._text_pattern)
        return _masked(text, spans, MASK) if spans else text

    def find_bytes(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of the occurrences in `data`, left to right, as `mask_bytes` replaces them."""
        return _spans(data, self._bytes, self._bytes_pattern) if self._bytes else []
