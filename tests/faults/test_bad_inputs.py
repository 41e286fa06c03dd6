"""Every CLI fed a table of bad inputs: exit 2, exactly one `error:` line, no traceback, nothing written; damaged
caches rebuilt with a warning; symlinked outputs written through (see bad_inputs.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from bad_inputs import CASES, run_case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outcomes(inputs, tmp_path_factory):
    """All cases, two at a time (each is a subprocess)."""
    scratch = tmp_path_factory.mktemp("bad-input-outs")
    with ThreadPoolExecutor(2) as pool:
        return {o.case.kind: o for o in pool.map(lambda c: run_case(c, inputs, scratch), CASES)}


def test_the_table_is_broad():
    assert len({c.kind for c in CASES}) == len(CASES) >= 40
    assert len({c.module for c in CASES}) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_is_refused_in_one_line(outcomes, case):
    o = outcomes[case.kind]
    if case.todo:  # a gap owned elsewhere: expected to fail until fixed, then this says to drop the todo
        if o.ok:
            pytest.fail(f"now refused: drop the todo ({case.todo})")
        pytest.xfail(case.todo)
    assert not o.traceback, o.command
    if case.expect == "rebuilt":
        assert o.first_code == 0, (o.command, "the first run failed, or left nothing to damage", o.first_code)
        assert o.code == 0 and o.warned, (o.command, o.code, o.last)
        return
    if case.expect == "through":
        assert o.code == 0 and o.through, (o.command, o.code, o.last)
        return
    assert o.code == 2, (o.command, o.code)
    assert len(o.error_lines) == 1, (o.command, o.error_lines)
    assert not o.written, (o.command, o.written)
