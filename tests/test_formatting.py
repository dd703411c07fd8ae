"""flashbench.formatting: the one home of each rule that turns a value into text for people. These pin what
users have always seen (report tables and claims, compare and the model card, study errors, plugin options)."""

from __future__ import annotations

import datetime
import math
import subprocess
import sys

import pytest

from flashbench import formatting as f
from flashbench.config import ComponentSpec

NAN = math.nan


@pytest.mark.parametrize(
    "x, text",
    [
        (0, "0"),
        (12345678, "12345678"),
        (0.0, "0.000"),
        (0.9999, "1.000"),
        (1.0, "1.00"),
        (45.4712, "45.47"),
        (99.99, "99.99"),
        (100.0, "100.0"),
        (123.456, "123.5"),
        (-3.14159, "-3.14"),
        (NAN, "–"),
        (None, "–"),
        (True, "True"),
        ("abc", "abc"),
        (math.inf, "inf"),
    ],
)
def test_number_has_3_2_1_decimals_below_1_100_and_above(x, text):
    assert f.number(x) == text


def test_a_metric_cell_shares_the_means_precision():
    assert f.mean_interval(45.4712, NAN, 43.9, 47.21) == "45.47 [43.90, 47.21]"
    assert f.mean_interval(45.4712, 2.1, 40.3, 50.7) == "45.47 ± 2.10 [40.30, 50.70]"
    assert f.mean_interval(456.789, 2.5, NAN, NAN) == "456.8 ± 2.5"
    assert f.mean_interval(0.01234, NAN, NAN, 1.0) == "0.012"
    assert f.interval(-0.1, 0.1, 3) == "[-0.100, 0.100]"


def test_counts_and_parameter_counts():
    assert [f.count(x) for x in (3, 3.0, "7", NAN, "x")] == ["3", "3", "7", "–", "x"]
    assert [f.params(x) for x in (999, 325_000, 26.4e6, 3e9, NAN)] == ["999", "325.0k", "26.4M", "3.0B", "–"]


def test_significant_digits_and_what_is_a_measurement():
    assert [f.significant(x) for x in (0.86814, 12345678, 1e-9, 0.0, NAN, math.inf, None, "1")] == [
        "0.8681",
        "1.235e+07",
        "1e-09",
        "0",
        "n/a",
        "n/a",
        "n/a",
        "n/a",
    ]
    assert f.significant_interval(0.86314, 0.87331) == "[0.8631, 0.8733]"
    assert f.finite(1.5) and f.finite(2) and not f.finite(True) and not f.finite(NAN) and not f.finite("1")


def test_the_two_toml_spellings_differ_only_in_their_quotes():
    value = {"name": "it's", "w": [1, 2.5, True], "s": NAN, "t": -math.inf}
    assert f.echo_text(value) == '{ name = "it\'s", w = [1, 2.5, true], s = nan, t = -inf }'
    assert f.echo_text("lsgan") == "'lsgan'"
    assert f.toml_text(value) == '{ name = "it\'s", w = [1, 2.5, true], s = nan, t = -inf }'
    assert f.toml_text("lsgan") == '"lsgan"'
    assert f.toml_text("caf\u00e9") == '"caf\\u00e9"' and f.echo_text("caf\u00e9") == "'caf\u00e9'"


def test_compact_text_is_one_short_cell():
    spec = ComponentSpec("lsgan", {"head": "code", "w": [1, 2.5], "on": True})
    assert f.compact_text(spec) == "lsgan(head=code w=[1 2.5] on=true)"
    assert f.compact_text(ComponentSpec("mse")) == "mse"
    assert f.compact_text([True, 1e-07, "x"]) == "[true 1e-07 x]"


def test_error_lines_describe_what_was_written():
    assert f.describe(4.0) == "a float (4.0)"
    assert f.describe(True) == "a boolean (true)"
    assert f.describe(5) == "an integer (5)"
    assert f.describe([1]) == "an array" and f.describe({}) == "a table"
    assert f.describe(datetime.date(1979, 5, 27)) == "a date/time (1979-05-27)"
    assert f.describe("x" * 100) == "a string ('" + "x" * 55 + "'...)"
    assert f.short_repr("abc") == "'abc'"


def test_formatting_imports_no_torch():
    code = "import sys, flashbench.formatting as f; f.number(1.5); f.is_missing(None); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
