"""Masking secrets in a run's output (SPEC §17): every occurrence of a used secret's value becomes `***`.

Rules: each line of a multi-line value is masked on its own (output is masked line by line, so a
value's lines can only ever show up one per output line), a trailing `\\r` of a value's line is not part
of it (a `\\r\\n` line end), and only lines of at least MIN_CHARS characters are masked (masking `a` or
`42` everywhere would make the log unreadable and tell a reader the value anyway). Longer values win:
one compiled alternation, longest first (Python's `re` takes the first alternative that matches at a
position, so at any position the longest value there is masked whole).

One pattern for bytes (the local executor masks the raw pipe bytes, before they are decoded and split
into 16 KiB pieces, see executors/lines.py) and one for text (lines an agent sends). This module
imports nothing of runsvc: the agent process uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_CHARS = 3  # shorter lines of a value are not masked


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


class Masker:
    """Masks the values given at construction in bytes (`mask_bytes`) and text (`mask_text`).

    `longest_bytes` is the UTF-8 length of the longest masked line: a streaming caller that cannot see a
    whole line yet keeps at least `longest_bytes - 1` bytes unmasked at its end (an occurrence may
    continue there) — see executors/lines.py."""

    __slots__ = ("_bytes", "_text", "longest_bytes")

    def __init__(self, values: Iterable[str]):
        lines = value_lines(values)
        self.longest_bytes = len(lines[0].encode()) if lines else 0
        self._bytes = re.compile(b"|".join(re.escape(line.encode()) for line in lines)) if lines else None
        self._text = re.compile("|".join(re.escape(line) for line in lines)) if lines else None

    def __bool__(self) -> bool:
        """Whether there is anything to mask."""
        return self._bytes is not None

    def mask_bytes(self, data: bytes) -> bytes:
        pattern = self._bytes
        return data if pattern is None else pattern.sub(b"***", data)

    def mask_text(self, text: str) -> str:
        pattern = self._text
        return text if pattern is None else pattern.sub(MASK, text)

    def find_bytes(self, data: bytes) -> Iterable[re.Match[bytes]]:
        """The occurrences in `data`, left to right, as `mask_bytes` replaces them."""
        pattern = self._bytes
        return () if pattern is None else pattern.finditer(data)
