"""The other-hearings study's summary (bench/other_hearings.py): the bands of the best hearing's
score, and how many in a band have another hearing scored complete."""

from __future__ import annotations

from bench.other_hearings import summary


def row(complete: bool, p: float | None, *others: float | None) -> dict[str, object]:
    return {"complete": complete, "p": p, "others": [(f"h{i}", q) for i, q in enumerate(others)]}


def test_rescues_are_counted_per_band_and_class() -> None:
    rows = [row(True, 0.9), row(True, 0.3, 0.2, 0.8), row(True, 0.3, 0.4),
            row(False, 0.2, 0.36), row(False, 0.01, 0.93), row(True, 0.05), row(False, None)]
    lines = summary(rows).splitlines()
    assert lines[0].startswith("7 pauses; ")
    assert "complete done 1" in lines[0] and "complete unsure 2" in lines[0]
    assert "fragment unfinished 2" in lines[0]  # no score counts as below the bands
    assert lines[1] == "unsure: another hearing scored >= 0.7: complete 1 of 2, fragments 0 of 1"
    assert lines[2] == ("unfinished: another hearing scored >= 0.7: complete 0 of 1, "
                        "fragments 1 of 2")
