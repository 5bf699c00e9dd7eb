"""The latency bench end to end, small: 2 turns (one in each of 2 rounds), 1 session, no
baseline, the light models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.models, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_latency_writes_p50_figures(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    exe = Path(sys.executable).with_name("voice-agent")
    cmd = [str(exe), "bench", "latency", "--turns", "1", "--rounds", "2", "--sessions", "1",
           "--no-baseline", "--quick", "--stt-model", "tiny.en", "--llm-model", "smollm2-135m",
           "--report", str(report), "--json", str(tmp_path / "turns.json")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = report.read_text()
    assert "1 turn per session, cycled, in 2 rounds" in text
    # The rounds merge into one run; the second round asks the next question, not the first again.
    runs = json.loads((tmp_path / "turns.json").read_text())[0]["runs"]
    assert [(r["sessions"], r["rounds"]) for r in runs] == [(1, 2)]
    turns = runs[0]["turns"]
    assert [t["round"] for t in turns] == [0, 1] and turns[0]["question"] != turns[1]["question"]
    # The voice-to-voice row: mode, sessions, turns ok, then p50 | p95 | max in ms.
    row = re.search(r"\| streaming \| 1 \| (\d)/2 \| (\d+) ms \| (\d+) ms \| (\d+) ms \|", text)
    assert row, text
    ok, p50, p95, worst = (int(g) for g in row.groups())
    assert ok >= 1
    assert 0 < p50 <= p95 <= worst < 30_000
    assert "aiortc ↔ aiortc on loopback" in text and "p50 **" in text
    # Every ICE address the server offered was loopback.
    section = text.split("## Session operations", 1)[1].split("\n## ", 1)[0]
    ops = re.search(r"\| streaming \| 1 \|[^\n]*\| ([^|\n]*) \|\n", section)
    assert ops and ops.group(1).strip() == "127.0.0.1", section
    # The stalls table says how late both event loops ran (a frame gap's likely cause).
    stalls = text.split("## Stalls", 1)[1].split("\n## ", 1)[0]
    lag = re.search(r"\| streaming \| 1 \|[^\n]*\| ([\d.]+) ms / ([\d.]+) ms \|\n", stalls)
    assert lag and 0 <= float(lag.group(1)) < 30_000 and 0 <= float(lag.group(2)) < 30_000, stalls
    # Frame gaps, and how many of them the client's own frozen loop made.
    gaps = re.search(r"\| streaming \| 1 \| \d+ \| (\d+) \((\d+)\) \|", stalls)
    assert gaps and int(gaps.group(2)) <= int(gaps.group(1)), stalls
    # The capacity table: the server's own capacity, one session admitted, none refused, and
    # the turns answered as in the voice-to-voice row.
    capacity = text.split("## Sessions at once: capacity and admission", 1)[1].split("\n## ", 1)[0]
    cap = re.search(r"\| streaming \| 1 \| (\d+) \| 1 \| 0 \| — \| (\d)/2 \|[^\n]*\| ([\d.]+) \|",
                    capacity)
    assert cap and int(cap.group(1)) >= 1 and int(cap.group(2)) == ok, capacity
    assert 0 < float(cap.group(3)) <= 1.0, capacity  # the peak load /v3/health reported
