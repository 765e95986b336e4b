"""parse_layers: every accepted form, and one-line errors for the rest (CLI and dashboard share it)."""

from __future__ import annotations

import pytest

from interp.errors import WorkbenchError
from interp.parse import parse_layers


@pytest.mark.parametrize(
    ("text", "layers"),
    [(None, None), ("", None), (" all ", None), ("3", [3]), ("0,5,7", [0, 5, 7]), ("10-12", [10, 11, 12]),
     ("7, 1-2 ,1", [1, 2, 7])],
)
def test_accepted_forms(text, layers):
    assert parse_layers(text) == layers


@pytest.mark.parametrize(("text", "message"), [("abc", "bad layers"), ("3-1", "smaller to a larger"),
                                                ("-2", "bad layers"), ("1,,2", "bad layers"), ("40", "out of range")])
def test_bad_text_is_one_line(text, message):
    with pytest.raises(WorkbenchError, match=message) as e:
        parse_layers(text, n_layers=30)
    assert "\n" not in str(e.value)
