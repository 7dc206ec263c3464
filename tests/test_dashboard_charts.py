"""The dashboard's SVG charts and its numbers, read as a person (and a screen reader) would."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal

from pingpost.ui import charts, numbers

SVG = "{http://www.w3.org/2000/svg}"


def test_a_bar_per_point_each_titled_with_its_value_and_the_axis_on_round_steps() -> None:
    points = [charts.Point(f"{h:02}:00", v, f"Mon Jan 1, {h:02}:00 UTC") for h, v in enumerate([0, 1234, 80, 2500])]
    svg = ET.fromstring(str(charts.bar_chart(points, title="Pings per hour", unit="pings")))
    assert svg.get("viewBox") == f"0 0 {charts.WIDTH} {charts.HEIGHT}" and svg.get("aria-label") == "Pings per hour"
    bars = svg.findall(f"{SVG}rect")
    assert [bar.findtext(f"{SVG}title") for bar in bars] == [
        "Mon Jan 1, 00:00 UTC: 0 pings", "Mon Jan 1, 01:00 UTC: 1,234 pings", "Mon Jan 1, 02:00 UTC: 80 pings",
        "Mon Jan 1, 03:00 UTC: 2,500 pings"]
    heights = [float(bar.get("height", "")) for bar in bars]
    assert heights[0] == 0 and heights[3] > heights[1] > heights[2] > 0
    axis = [t.text for t in svg.findall(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert axis == ["0", "1k", "2k", "3k"], "steps of 1, 2 or 5 times a power of ten reaching the top"
    assert "style" not in str(charts.bar_chart(points, title="t", unit="u")), "colours come from the stylesheet"


def test_money_bars_and_an_empty_chart() -> None:
    svg = str(charts.bar_chart([charts.Point("Jan 5", 12.5)], title="Revenue per day", unit="", is_money=True,
                               kind="money"))
    assert "Jan 5: $12.50 </title>" in svg and 'class="chart chart-money"' in svg
    for points in ([], [charts.Point("Jan 5", 0), charts.Point("Jan 6", 0)]):
        empty = ET.fromstring(str(charts.bar_chart(points, title="Sold per day", unit="sold")))
        assert empty.findall(f"{SVG}rect") == [] and "no traffic in this range" in ET.tostring(empty, "unicode")


def test_labels_under_the_bars_are_few_enough_not_to_overlap() -> None:
    points = [charts.Point(f"{h:02}:00", h) for h in range(48)]
    svg = str(charts.bar_chart(points, title="Pings per hour", unit="pings"))
    labels = re.findall(r'text-anchor="middle">([^<]+)</text>', svg)
    assert 0 < len(labels) <= charts.MAX_LABELS and labels[0] == "00:00"
    assert len(svg) < 12_000, len(svg)


def test_a_tenants_text_is_escaped() -> None:
    svg = str(charts.bar_chart([charts.Point("<script>", 1)], title='a "b" <c>', unit="&"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'aria-label="a &#34;b&#34; &lt;c&gt;"' in svg


def test_numbers_read_with_separators_currency_and_percent() -> None:
    assert numbers.count(1234567) == "1,234,567"
    assert numbers.money(Decimal("1234.5")) == "$1,234.50" and numbers.money(-3) == "-$3.00"
    assert numbers.money(-0.001) == "$0.00"
    assert numbers.rate(0.1234) == "12.3%" and numbers.rate(0) == "0.0%"
    assert [numbers.compact(v) for v in (950, 12_000, 1_500_000)] == ["950", "12k", "1.5M"]
    assert numbers.compact(2.5, is_money=True) == "$2.50" and numbers.compact(2000, is_money=True) == "$2k"
