"""The logfmt writer: one line per event whatever the values hold."""

import logging

import pytest

from runsvc.log import LogfmtFormatter


def _line(msg: str, **fields: object) -> str:
    record = logging.LogRecord("runsvc.test", logging.INFO, __file__, 1, msg, None, None)
    record.fields = fields
    return LogfmtFormatter().format(record)


def test_plain_values_stay_bare():
    """Printable values without spaces, quotes or equals signs are written as they are."""
    line = _line("run started", run_id=7, user="alice")
    assert line.endswith('msg="run started" run_id=7 user=alice')


def test_a_forged_line_stays_inside_its_value():
    """A username carrying CR/LF and a fake `level=error` entry cannot start a line of its own."""
    forged = 'bob\r\nts=2026-01-01T00:00:00.000Z level=error msg="admin created"'
    line = _line("login failed", username=forged)
    assert "\n" not in line and "\r" not in line
    assert line.endswith(
        'username="bob\\r\\nts=2026-01-01T00:00:00.000Z level=error msg=\\"admin created\\""'
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # terminal escape (clears an operator's screen)
        ("a\x00b", "a\\x00b"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b", "c1\\x9b"),  # C1 control: CSI on some terminals
        ("line\u2028sep", "line\\u2028sep"),  # Unicode line separator
        ("rtl\u202eevil", "rtl\\u202eevil"),  # bidi override hides text order
        ("tab\there", "tab\\there"),
        ('back\\slash "q"', 'back\\\\slash \\"q\\"'),
    ],
)
def test_every_control_character_is_escaped(raw: str, escaped: str):
    """Control characters of every kind are written as escapes, never raw."""
    line = _line("m", value=raw)
    assert line.endswith(f'value="{escaped}"')
    assert line.isprintable()


def test_the_message_is_escaped_too():
    """The message is quoted and escaped like any value."""
    assert _line("two\nlines").endswith('msg="two\\nlines"')
