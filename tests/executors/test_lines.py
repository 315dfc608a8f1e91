"""LineSplitter: the same lines whatever the chunk boundaries."""

from __future__ import annotations

import pytest

from runsvc.executors.lines import MAX_LINE_BYTES, LineSplitter, split_text


def split(data: bytes, chunk: int | None = None, max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    splitter = LineSplitter(max_bytes)
    step = chunk or max(len(data), 1)
    lines: list[str] = []
    for start in range(0, len(data), step):
        lines += splitter.feed(data[start : start + step])
    return lines + splitter.finish()


SAMPLES = [
    b"one\ntwo\r\nthree",
    b"\n\n\r\n",
    b"caf\xc3\xa9 \xe2\x82\xac\n\xff bad \xfe\n",
    b"x" * 40000 + b"\r\ny\n",
    b"a" * 16383 + "\u00e9".encode() + b"b" * 20000,
    b"lone \r carriage return\n",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 4096, 16384, 65536])
def test_chunking_does_not_change_lines(data: bytes, chunk: int) -> None:
    """Feeding a byte at a time or all at once gives the same lines."""
    assert split(data, chunk) == split(data)


def test_line_endings_and_partial_last_line() -> None:
    """\\n and \\r\\n end lines, a lone \\r does not, and an unterminated last line is kept."""
    assert split(b"one\ntwo\r\n\nlone\rcr\nlast") == ["one", "two", "", "lone\rcr", "last"]
    assert split(b"") == []
    assert split(b"end\n") == ["end"]


def test_invalid_utf8_is_replaced() -> None:
    """Invalid bytes become U+FFFD; valid multi-byte characters survive."""
    assert split(b"caf\xc3\xa9 \xff!\n") == ["caf\u00e9 \ufffd!"]


def test_long_line_split_without_cutting_a_character() -> None:
    """A long line is cut at 16 KiB, a little earlier if the cut would split a UTF-8 sequence."""
    assert [len(p) for p in split(b"x" * 40 * 1024)] == [16384, 16384, 8192]
    pieces = split(b"a" * 16383 + "\u00e9".encode() + b"b\n")
    assert pieces == ["a" * 16383, "\u00e9b"]


def test_tiny_limit_rejected() -> None:
    """A limit too small for one UTF-8 character is refused."""
    with pytest.raises(ValueError, match="max_bytes must be >= 4"):
        LineSplitter(3)


def test_nul_becomes_the_replacement_character_whatever_the_chunks():
    """NUL bytes become U+FFFD (PostgreSQL's text cannot hold them), split across chunks or not; an
    agent's text lines get the same."""
    data = b"a\x00b\n\x00\x00\nend"
    assert split(data) == split(data, chunk=1) == ["a\ufffdb", "\ufffd\ufffd", "end"]
    assert split_text("x\x00y") == ["x\ufffdy"]
