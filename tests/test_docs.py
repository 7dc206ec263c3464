"""The docs stand alone and say what the code does.

docs/ and the README describe the product in its own words: they cite no outside document,
and every page and link they point at is there. Where a page shows what the exchange
answers or prints, the test runs the real thing and compares.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pingpost import targeting
from pingpost.config import from_dict
from pingpost.errors import Code
from pingpost.openapi import document
from pingpost.schema import PingFields

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
PAGES = [*DOCS, README]

#: "contract 4.1", "contract (section 3)", "the contract (v1)", "section 2", "sections 1-7".
CITATION = re.compile(r"\bcontract\b[^.\n]{0,20}?\d|\bsections?\s+\d", re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = heading.strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The page's headings' anchors (a ``#`` line inside a code block is no heading)."""
    found, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            found.add(slug(line.lstrip("#")))
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_cites_the_contract_file_or_its_section_numbers(page: Path) -> None:
    text = page.read_text()
    assert "contract.md" not in text.lower()
    assert CITATION.findall(text) == []


def test_every_doc_is_listed_in_the_readme() -> None:
    text = README.read_text()
    missing = [page_id(doc) for doc in DOCS if f"]({page_id(doc)})" not in text]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_the_quick_start_is_two_commands() -> None:
    quick_start = README.read_text().split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_every_error_code_is_documented_and_in_the_openapi_document() -> None:
    """The exchange answers only the codes of ``errors.Code`` (every refusal raises one):
    docs/api.md's error table has a row for each, with its status, and no other row, and
    the OpenAPI document lists every one of them as a value of the error's ``code``."""
    api = (ROOT / "docs" / "api.md").read_text()
    documented = {(int(status), code) for status, code in re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", api, re.M)}
    assert documented == {(code.status, code.value) for code in Code}
    listed = document()["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert sorted(listed) == sorted(code.value for code in Code)


@pytest.mark.parametrize("command", ["serve", "check"])
def test_the_config_error_example_is_what_the_commands_print(tmp_path: Path, command: str) -> None:
    errors = (ROOT / "docs" / "config.md").read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    bad_file = errors.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = errors.split("prints, on stderr:\n\n```\n", 1)[1].split("```", 1)[0]
    (tmp_path / "bad.toml").write_text(bad_file)
    done = subprocess.run([sys.executable, "-m", "pingpost.cli", command, "--config", "bad.toml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == shown.splitlines()


@pytest.mark.parametrize("build", [targeting.Index, targeting.build_index], ids=["reference", "engine"])
def test_a_schedule_without_a_timezone_is_in_utc_whatever_the_exchange_timezone(build: type) -> None:
    """docs/config.md: a schedule's time zone defaults to UTC, not to ``[exchange] timezone``.
    Monday 12:00 UTC is inside a Monday 11:00-13:00 window in UTC, and is Tuesday 02:00 in the
    exchange's zone (UTC+14), where it would not be."""
    config = from_dict({
        "exchange": {"timezone": "Pacific/Kiritimati"},
        "sellers": [{"id": "s1", "api_keys": ["key-s1-123"]}],
        "buyers": [{"id": "b"}],
        "campaigns": [{"id": "c0", "buyer": "b", "vertical": "auto", "post_url": "http://b/post", "fixed_price": 1.0,
                       "filters": {"schedule": {"days": ["mon"], "start": "11:00", "end": "13:00"}}}],
    })
    monday_noon_utc = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()
    index = build(config)
    ping = PingFields(vertical="auto", zip="90210")
    assert index.select(ping, "s1", monday_noon_utc, bytearray(1), [0]).eligible == [0]
    assert index.select(ping, "s1", monday_noon_utc + 2 * 3600, bytearray(1), [0]).eligible == []
