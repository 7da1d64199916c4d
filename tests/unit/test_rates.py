"""tc's rate units, as `podnet run --bandwidth-*` reads them."""

from __future__ import annotations

import pytest

from podnet.errors import InvalidArgument
from podnet.util.rates import format_rate, parse_rate


@pytest.mark.parametrize("text,bits", [("10mbit", 10_000_000), ("500kbit", 500_000), ("1gbit", 10**9),
                                       ("1.5mbit", 1_500_000), ("125kbps", 1_000_000), ("2mibit", 2 * 2**20),
                                       ("64000", 64_000), ("10M", 10_000_000), ("8000bit", 8000)])
def test_tc_units(text: str, bits: int) -> None:
    assert parse_rate(text, "--bandwidth-ingress") == bits


@pytest.mark.parametrize("text", ["", "fast", "10 mbit", "-1mbit", "10mbits", "1kbit", "100gbit", "0"])
def test_bad_rates_are_one_line_naming_the_flag(text: str) -> None:
    with pytest.raises(InvalidArgument, match="--bandwidth-egress"):
        parse_rate(text, "--bandwidth-egress")


def test_format() -> None:
    assert [format_rate(b) for b in (10**7, 1_500_000, 8000, 12345)] == ["10mbit", "1500kbit", "8kbit", "12345bit"]
