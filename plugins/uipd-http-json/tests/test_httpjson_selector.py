"""The JSONPath subset that finds the entity list."""

import pytest

from uipd_http_json.selector import Selector

DOC = {"data": {"items": [{"id": 1}, {"id": 2}], "meta": {"n": 2}}, "odd key": [{"id": "x"}]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$", [DOC]),
        ("$.data.items[*]", [{"id": 1}, {"id": 2}]),
        ("$.data.items", [{"id": 1}, {"id": 2}]),  # one reached list stands for its elements
        ("$['data'][\"items\"][-1]", [{"id": 2}]),
        ("$['odd key'][0]", [{"id": "x"}]),
        ("$.data.*", [[{"id": 1}, {"id": 2}], {"n": 2}]),
        ("$.missing.items[*]", []),
        ("$.data.items[5]", []),
    ],
)
def test_selects_entities(text, expected):
    assert Selector.parse(text).entities(DOC) == expected


@pytest.mark.parametrize("text", ["data.items", "$..id", "$.items[?(@.id)]", "$.a[1:2]", "$.a."])
def test_unsupported_syntax_is_refused_with_its_position(text):
    with pytest.raises(ValueError, match="selector"):
        Selector.parse(text)
