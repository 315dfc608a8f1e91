"""Splitting a byte stream into output lines: the shape every stdout/stderr event has (SPEC §4), with
the values of the run's secrets masked on the way (SPEC §17)."""

from __future__ import annotations

from ..secrets.masking import Masker

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

    With a `masker`, every occurrence of a secret's value in a line is replaced by `***` in the whole line
    before it is cut into pieces, whatever the chunk boundaries: complete lines are masked whole (one
    regex pass over all the lines a chunk completes), and of a line whose end has not arrived only the
    part where no occurrence can still continue is masked and let out (see `_settle`).
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES, masker: Masker | None = None):
        if max_bytes < 4:
            raise ValueError("max_bytes must be >= 4")
        self._max = max_bytes
        self._pending = b""  # the start of a line whose end has not arrived, at most max_bytes long
        self._masker = masker if masker else None
        # With a masker: the start of the current line, masked and final, then `_raw`, not masked yet.
        self._ready = b""
        self._raw = b""

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by `data`, in order (pieces of an over-long line count as lines)."""
        if b"\0" in data:
            data = data.replace(b"\0", REPLACEMENT)
        if self._masker is not None:
            return self._feed_masked(self._masker, data)
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

    def _feed_masked(self, masker: Masker, data: bytes) -> list[str]:
        raw = self._raw + data if self._raw else data
        end = raw.rfind(b"\n")
        if end == -1:
            self._raw = raw
            lines: list[str] = []
        else:
            # Values have no newline, so no occurrence spans two lines: one pass masks every line whole.
            masked = masker.mask_bytes(raw[: end + 1])
            self._raw = raw[end + 1 :]
            if self._ready:
                masked, self._ready = self._ready + masked, b""
            lines = self._plain(masked)  # ends with a newline: nothing stays pending
        lines.extend(self._settle(masker))
        return lines

    def _plain(self, data: bytes) -> list[str]:
        """The unmasked splitter's work on bytes that need no more masking (whole lines: its `_pending`
        is empty before and after)."""
        saved, self._masker = self._masker, None
        try:
            return self.feed(data)
        finally:
            self._masker = saved

    def _settle(self, masker: Masker) -> list[str]:
        """Move the start of the unfinished line from `_raw` to `_ready`, masked, as far as no occurrence
        can still change: an occurrence starting `longest_bytes` or more before the end of `_raw` is
        decided (every value fits in what has arrived after it), so is the text before it. Then the
        full-size pieces of `_ready` wait no longer than in the unmasked splitter (plus what is held)."""
        raw = self._raw
        hold = masker.longest_bytes - 1
        boundary = len(raw) - hold
        if boundary <= 0:
            return []
        parts = [self._ready]
        position = 0
        for start, end in masker.find_bytes(raw):
            if start >= boundary:
                break
            parts.append(raw[position:start])
            parts.append(b"***")
            position = end
        cut = max(position, boundary)
        parts.append(raw[position:cut])
        self._raw = raw[cut:]
        ready = b"".join(parts)
        limit = self._max
        pieces: list[str] = []
        while len(ready) > limit:  # never the last byte: a `\r` there may be followed by its `\n`
            cut_at = _cut_point(ready, limit)
            pieces.append(ready[:cut_at].decode("utf-8", "replace"))
            ready = ready[cut_at:]
        self._ready = ready
        return pieces

    def finish(self) -> list[str]:
        """The last line, if the stream ended without a newline after it; the splitter is then empty."""
        if self._masker is not None:
            tail = self._ready + self._masker.mask_bytes(self._raw)
            self._ready = self._raw = b""
            if not tail:
                return []
            if tail.endswith(b"\r"):
                tail = tail[:-1]
            lines: list[str] = []
            self._split_long(tail, lines)
            return lines
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


def split_text(text: str, max_bytes: int = MAX_LINE_BYTES, masker: Masker | None = None) -> list[str]:
    """The lines a local run would have produced for `text` followed by a line end: split at `\\n` (a
    `\\r` before it dropped) and cut into pieces of at most `max_bytes`, by the same LineSplitter, with
    `masker`'s values masked in each whole line first.

    For lines that arrive as text (an agent's output): a line is a line whichever executor ran the run.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if masker:
        text = masker.mask_text(text)
    fits = len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes  # UTF-8: at most 4 bytes a character
    if fits and "\n" not in text and not text.endswith("\r"):
        return [text]  # the common case: already one line of local shape
    return LineSplitter(max_bytes).feed(text.encode() + b"\n")
