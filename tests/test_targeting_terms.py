"""The terms the reference and the compiled twin share (``pingpost.targeting_terms``).

Both read them from that one module, so a change there reaches both, and terms the
twin's C layout cannot encode stop the engine at import, under ``python -O`` too. Each
case runs in a fresh interpreter that changes a term before ``pingpost.targeting`` is
first imported, the way an edited ``targeting_terms.py`` would be read.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pingpost import targeting

pytestmark = pytest.mark.skipif(targeting._compiled is None, reason="pingpost._targeting is not built")

#: Selects an open, a capped, a benched and a paused (block code 3) campaign with each
#: implementation and prints each one's selection, or the ``KeyError`` it raised.
SELECT_EACH = """
import json
from pingpost import targeting
from pingpost.config import from_dict
from pingpost.schema import PingFields
config = from_dict({"buyers": [{"id": "b"}], "campaigns": [
    {"id": f"c{i}", "buyer": "b", "vertical": "auto", "post_url": "http://b/post", "fixed_price": 1.0}
    for i in range(4)]})
for build in (targeting.Index, targeting.build_index):
    try:
        out = build(config).select(PingFields(vertical="auto", zip="90210"), "s1", 0.0, bytearray([0, 1, 2, 3]), [0] * 4)
        print(json.dumps([out.eligible, out.reasons]))
    except KeyError as error:
        print(json.dumps(["KeyError", *error.args]))
"""


def run_with(change: str, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    script = f"import pingpost.targeting_terms as terms\n{change}\n{code}"
    return subprocess.run([sys.executable, *flags, "-c", script], check=False, capture_output=True, text=True,
                          timeout=60)


def each_selection(change: str) -> list[list[object]]:
    done = run_with(change, SELECT_EACH)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_new_block_code_reaches_both_implementations() -> None:
    paused = [[0], [[1, "capped"], [2, "benched"], [3, "paused"]]]
    assert each_selection('terms.BLOCK_REASON = {**terms.BLOCK_REASON, 3: "paused"}') == [paused, paused]


def test_a_block_code_the_terms_do_not_define_is_an_error_in_both() -> None:
    assert each_selection("") == [["KeyError", 3], ["KeyError", 3]]


@pytest.mark.parametrize("flags", [(), ("-O",)], ids=["plain", "optimized"])
@pytest.mark.parametrize("change, named", [
    pytest.param("terms.FILTER_ORDER = ('min_quality', *[f for f in terms.FILTER_ORDER if f != 'min_quality'])",
                 "FILTER_ORDER", id="min_quality_first"),
    pytest.param("terms.FILTER_ORDER = (*terms.FILTER_ORDER[:-1], 'age', 'rules')", "FILTER_ORDER", id="new_filter"),
    pytest.param("terms.FILTER_ORDER = ('states', *terms.FILTER_ORDER[2:])", "FILTER_ORDER", id="filter_missing"),
    pytest.param("terms.BLOCK_REASON = {**terms.BLOCK_REASON, 256: 'paused'}", "BLOCK_REASON", id="block_not_a_byte"),
    pytest.param("terms.BLOCK_REASON = {terms.OPEN: 'open', **terms.BLOCK_REASON}", "BLOCK_REASON", id="open_blocks"),
])
def test_terms_the_compiled_layout_cannot_encode_stop_the_import(change: str, named: str, flags: tuple[str, ...]) -> None:
    """An error, not an assert (gone under -O), and not an ``ImportError`` either, which
    would let the reference serve in silence."""
    done = run_with(change, "import pingpost.targeting", *flags)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pingpost.targeting_terms.TermsError: ") and named in last, done.stderr
