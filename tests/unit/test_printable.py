"""`printable`: text from the datastore can never steer the terminal it is printed on."""

from __future__ import annotations

import pytest

from shoal.observer.format import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("alpha", "alpha"),
        ("x[/]", "x[/]"),  # markup is rich's concern: the text itself is printable
        ("C:\\tasks\\new", "C:\\tasks\\new"),
        ("red\x1b[31mtext", "red\\x1b[31mtext"),
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # OSC: retitle the window, then BEL
        ("ok\rFAKE", "ok\\x0dFAKE"),  # carriage return: overwrite what precedes
        ("a\nb\tc", "a\\x0ab\\x09c"),
        ("\x9b2J", "\\x9b2J"),  # C1 CSI: clear the screen without an ESC
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # what a non-UTF-8 byte in argv decodes to
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("naïve 名前 ✓", "naïve 名前 ✓"),
    ],
)
def test_control_characters_are_shown_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_multiline_keeps_newlines_and_tabs_but_escapes_the_rest() -> None:
    traceback = 'Traceback:\n\tFile "x"\rline\x1b[2K\n'
    assert printable(traceback, multiline=True) == 'Traceback:\n\tFile "x"\\x0dline\\x1b[2K\n'


def test_result_is_always_encodable() -> None:
    printable("\ud800 lone \udfff").encode("utf-8")


def test_brief_ranges_cut_long_sections_at_a_separator() -> None:
    from shoal.observer.format import brief_ranges

    assert brief_ranges([0, 1, 2, 5]) == "0-2, 5"
    text = brief_ranges(range(0, 128, 2), most_chars=20)
    assert text == "0, 2, 4, 6, 8, 10, …" and len(text) <= 22
