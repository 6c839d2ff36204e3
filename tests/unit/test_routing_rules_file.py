"""The rules file: a good file makes the configuration; a bad one is refused whole, naming the
line of the mistake."""

from __future__ import annotations

import pytest

from paygrid.routing.config import ConfigError, RoutingConfig
from paygrid.routing.rules_file import Vocabulary, parse

VOCAB = Vocabulary(("unionpay", "netsunion", "alipay"), ("page", "native"), ("ICBC", "CCB"))
BASE = RoutingConfig(3, weights={"CCB": {"alipay": 500}})

GOOD = """\
# cut-over of ICBC card payments
[health]
min_calls = 10
open_s = 15

[rates]
unionpay = "0.25"
netsunion = "0.1"

[[rule]]
name = "big-merchant"
merchants = ["m100"]
channels = ["alipay"]

[[rule]]
name = "icbc-cards"
channels = ["unionpay", "netsunion"]
banks = ["ICBC"]
methods = ["page"]
currencies = ["CNY"]
min_amount = 1
max_amount = 5000000

[weights.ICBC]
netsunion = "1"
"""


def test_a_good_file_makes_the_configuration() -> None:
    parsed = parse(GOOD, VOCAB, BASE)
    config = parsed.config
    assert [r.name for r in config.rules] == ["big-merchant", "icbc-cards"]
    icbc = config.rules[1]
    assert icbc.channels == ("unionpay", "netsunion") and icbc.max_amount == 5_000_000
    assert config.rates_ppm == {"unionpay": 2500, "netsunion": 1000}
    assert config.weights == {"ICBC": {"netsunion": 100}} and parsed.sets_weights
    assert config.health.min_calls == 10 and config.health.open_s == 15


def test_a_file_without_weights_keeps_those_in_force() -> None:
    text = GOOD.split("[weights.ICBC]")[0]
    parsed = parse(text, VOCAB, BASE)
    assert parsed.config.weights == BASE.weights and not parsed.sets_weights


def mistake(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, VOCAB, BASE)
    return caught.value


@pytest.mark.parametrize(
    ("old", "new", "line", "says"),
    [
        ('channels = ["alipay"]', 'channels = ["wechat"]', 13, "unknown channel 'wechat'"),
        ('banks = ["ICBC"]', 'banks = ["ICBCX"]', 18, "unknown bank 'ICBCX'"),
        ('methods = ["page"]', 'methods = ["card"]', 19, "unknown method 'card'"),
        ("max_amount = 5000000", "max_amount = 0", 22, "below min_amount"),
        ("min_amount = 1", "min_amount = 1.5", 21, "whole number of fen"),
        ('currencies = ["CNY"]', 'currencies = ["cny"]', 20, "ISO 4217"),
        ('name = "icbc-cards"', 'name = "big-merchant"', 15, "used twice"),
        ('netsunion = "1"', 'netsunion = "101"', 25, "0 to 100"),
        ('netsunion = "1"', 'netsunion = "0.001"', 25, "at most two decimals"),
        ('netsunion = "1"', 'wechat = "1"', 25, "unknown channel 'wechat'"),
        ("[weights.ICBC]", "[weights.BOC]", 24, "unknown bank 'BOC'"),
        ('unionpay = "0.25"', 'unionpay = "11"', 7, "above 10%"),
        ('unionpay = "0.25"', "unionpay = 0.25", 7, "as a string"),
        ("min_calls = 10", "min_callz = 10", 3, "unknown key 'min_callz'"),
        ("open_s = 15", "open_s = 0", 2, "out of range"),
        ('merchants = ["m100"]', 'merchant = ["m100"]', 12, "unknown rule key 'merchant'"),
        ('[[rule]]\nname = "icbc', '[[rule]\nname = "icbc', 15, "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(old: str, new: str, line: int, says: str) -> None:
    assert old in GOOD
    error = mistake(GOOD.replace(old, new, 1))
    assert error.line == line, str(error)
    assert says in error.message


def test_shares_over_a_hundred_percent_and_an_unknown_section() -> None:
    error = mistake(GOOD.replace('netsunion = "1"', 'netsunion = "60"\nunionpay = "41"'))
    assert error.line == 24 and "more than 100%" in error.message
    error = mistake("[routes]\nx = 1\n")
    assert error.line == 1 and "unknown section 'routes'" in error.message
    error = mistake('[[rule]]\nchannels = ["alipay"]\n')
    assert error.line == 1 and "needs a name" in error.message
