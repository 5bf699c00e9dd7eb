"""``asyncio.wait_for`` stays out of the code base: on Python 3.11 it returns normally when the
awaited future completes in the loop turn the caller is cancelled, and the cancel is lost (the
deaf session of issue #12). ``asyncio.timeout`` and ``core.tasks.within`` do not have the race."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "wait_for"
            and isinstance(node.value, ast.Name) and node.value.id == "asyncio"]


def test_no_asyncio_wait_for_in_the_server_or_the_bench() -> None:
    found = {str(p.relative_to(ROOT)): lines
             for folder in ("src", "bench") for p in sorted((ROOT / folder).rglob("*.py"))
             if (lines := wait_for_calls(p))}
    assert found == {}, f"asyncio.wait_for is used at {found}: use asyncio.timeout or within()"


def test_the_check_finds_a_wait_for(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import asyncio\nasync def f(e):\n    await asyncio.wait_for(e.wait(), 1)\n")
    assert wait_for_calls(sample) == [3]
