"""Masking (SPEC §17): every occurrence of a used secret's value becomes `***` in whole lines, before they
are cut at 16 KiB, whatever the pipe's read boundaries."""

from __future__ import annotations

import random

import pytest

from runsvc.executors.lines import LineSplitter, split_text
from runsvc.secrets.masking import Masker


def _lines(masker: Masker | None, data: bytes, cuts: list[int], max_bytes: int = 16 * 1024) -> list[str]:
    splitter = LineSplitter(max_bytes, masker=masker)
    lines: list[str] = []
    start = 0
    for cut in [*cuts, len(data)]:
        lines += splitter.feed(data[start:cut])
        start = cut
    return lines + splitter.finish()


def test_rules_longest_first_multi_line_and_short_lines() -> None:
    """Each line of a multi-line value is masked on its own (a `\\r` line end is not part of it), lines
    under 3 characters are not masked, and the longest value wins where two start together."""
    masker = Masker(["hunter2", "hunter22xyz", "line-one\r\nab\nline-three"])
    assert masker.mask_text("pw=hunter22xyz; again hunter2; ab stays") == "pw=***; again ***; ab stays"
    assert masker.mask_text("line-one and line-three") == "*** and ***"
    assert Masker(["ab", "\n"]).mask_text("ab") == "ab" and not Masker(["ab"])


def test_regex_metacharacters_are_literal() -> None:
    """A value is text, not a pattern."""
    masker = Masker(["a.b*c", "(x|y)"])
    assert masker.mask_text("a.b*c aXbc (x|y) x") == "*** aXbc *** x"


@pytest.mark.parametrize("seed", range(20))
def test_any_read_boundaries_give_the_same_masked_lines(seed: int) -> None:
    """Values split across reads (even one byte per read), in lines longer than the 16 KiB cut and
    across the cut itself, are masked as if each line had arrived whole, then cut into pieces."""
    rng = random.Random(seed)
    values = ["pässwörd-ÄÖÜ", "tok_" + "x" * 40, "short"]
    masker = Masker(values)
    limit = 64
    parts = []
    for _ in range(30):
        words = [rng.choice([*values, "filler", "é", "pass", "tok_xx", "\r", "*" * rng.randint(1, 90)])
                 for _ in range(rng.randint(0, 12))]
        parts.append("".join(words))
    data = "\n".join(parts).encode()
    expected = [piece for part in parts for piece in split_text(masker.mask_text(part), limit)]
    if not parts[-1]:
        expected.pop()  # the stream ends with a line end: no last partial line
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 60))))
    assert _lines(masker, data, cuts, limit) == expected
    assert _lines(masker, data, list(range(1, len(data))), limit) == expected
    for line in expected:
        assert all(value not in line for value in values)


def test_a_value_across_the_16_kib_cut_is_masked() -> None:
    """A value straddling the place where a long line is cut is masked in the whole line first."""
    secret = "SECRET-VALUE-1234"
    line = "a" * (16 * 1024 - 5) + secret + "b" * 10
    pieces = _lines(Masker([secret]), (line + "\n").encode(), [16 * 1024 - 2, 16 * 1024 + 3])
    assert "".join(pieces) == "a" * (16 * 1024 - 5) + "***" + "b" * 10
    assert all(len(piece.encode()) <= 16 * 1024 for piece in pieces)


def test_without_secrets_nothing_changes() -> None:
    """An empty masker keeps the splitter's plain path: the same lines as before."""
    data = b"one\r\ntwo\n" + b"x" * 40 + b"\npartial"
    assert _lines(Masker([]), data, [3, 7], 16) == _lines(None, data, [3, 7], 16)


@pytest.mark.parametrize("seed", range(30))
def test_found_occurrences_are_exactly_the_alternations_matches(seed: int) -> None:
    """Masking finds values one by one, then takes them leftmost first, longest first at a position: the
    same result as one regex alternation of the values, longest first — also with overlapping values,
    values inside others, and past FIND_LIMIT (where it switches to that alternation)."""
    import re

    from runsvc.secrets import masking

    rng = random.Random(seed)
    values = ["".join(rng.choice("abé") for _ in range(rng.randint(3, 7))) for _ in range(rng.randint(1, 6))]
    lines = masking.value_lines(values)
    pattern = re.compile("|".join(re.escape(line) for line in lines))
    masker = Masker(values)
    for size in (10, 200, 5000):  # the last holds far more than FIND_LIMIT occurrences
        text = "".join(rng.choice("abéx") for _ in range(size))
        assert masker.mask_text(text) == pattern.sub("***", text)
        assert masker.mask_bytes(text.encode()) == pattern.sub("***", text).encode()
