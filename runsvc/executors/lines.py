"""Splitting a byte stream into output lines: the shape every stdout/stderr event has (SPEC §4)."""

from __future__ import annotations

MAX_LINE_BYTES = 16 * 1024  # 16 KiB: a longer line becomes several events of at most this many bytes
# A NUL in output becomes U+FFFD, as undecodable bytes do: PostgreSQL's text cannot hold NUL, and the
# stored line must be the line watchers saw, on either database.
REPLACEMENT = "\ufffd".encode()


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _cut_point(data: bytes | bytearray, limit: int) -> int:
    """Where to cut `data` (longer than `limit`) so that no UTF-8 sequence is split, if that is cheap.

    Backs off at most three bytes from `limit`; for data that is not UTF-8 there it cuts at `limit`.
    """
    cut = limit
    while cut > limit - 3 and _is_continuation(data[cut]):
        cut -= 1
    if _is_continuation(data[cut]):
        return limit
    return cut


class LineSplitter:
    """Turns chunks of bytes into lines of text, the same lines whatever the chunk boundaries are.

    A line ends at `\\n`; a `\\r` right before it is dropped too. Each line is decoded on its own as UTF-8
    with replacement, so a character split across two chunks stays whole. A line longer than `max_bytes`
    comes out in pieces of at most `max_bytes`, cut before a UTF-8 sequence rather than inside it.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES):
        if max_bytes < 4:
            raise ValueError("max_bytes must be >= 4")
        self._max = max_bytes
        self._pending = b""  # the start of a line whose end has not arrived, at most max_bytes long

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by `data`, in order (pieces of an over-long line count as lines)."""
        if b"\0" in data:
            data = data.replace(b"\0", REPLACEMENT)
        if self._pending:
            data = self._pending + data
        parts = data.split(b"\n")
        pending = parts.pop()
        lines: list[str] = []
        append = lines.append
        limit = self._max
        for part in parts:
            if part.endswith(b"\r"):
                part = part[:-1]
            if len(part) <= limit:
                append(part.decode("utf-8", "replace"))
            else:
                self._split_long(part, lines)
        # A partial line only waits while it is short: its full-size pieces go out now. Cut only while
        # more than `limit` bytes wait, so a pending `\r` never ends a piece before its `\n` arrives.
        while len(pending) > limit:
            cut = _cut_point(pending, limit)
            append(pending[:cut].decode("utf-8", "replace"))
            pending = pending[cut:]
        self._pending = pending
        return lines

    def finish(self) -> list[str]:
        """The last line, if the stream ended without a newline after it; the splitter is then empty."""
        pending, self._pending = self._pending, b""
        if not pending:
            return []
        if pending.endswith(b"\r"):
            pending = pending[:-1]
        return [pending.decode("utf-8", "replace")]

    def _split_long(self, line: bytes, out: list[str]) -> None:
        limit = self._max
        while len(line) > limit:
            cut = _cut_point(line, limit)
            out.append(line[:cut].decode("utf-8", "replace"))
            line = line[cut:]
        out.append(line.decode("utf-8", "replace"))


def split_text(text: str, max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """The lines a local run would have produced for `text` followed by a line end: split at `\\n` (a
    `\\r` before it dropped) and cut into pieces of at most `max_bytes`, by the same LineSplitter.

    For lines that arrive as text (an agent's output): a line is a line whichever executor ran the run.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    fits = len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes  # UTF-8: at most 4 bytes a character
    if fits and "\n" not in text and not text.endswith("\r"):
        return [text]  # the common case: already one line of local shape
    return LineSplitter(max_bytes).feed(text.encode() + b"\n")
