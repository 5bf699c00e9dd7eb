"""Suite-wide hooks.

The test process ends with ``os._exit`` once pytest has reported everything. Why: 2 runs in 5 of
the whole suite ended with a segfault *after* the summary ("248 passed"), in libpython's
``new_threadstate`` on a thread Python did not create (dmesg: ``segfault at 28 ... in
libpython3.11``). That is a native thread entering Python while the interpreter is being torn
down: xllamacpp's server calls into Python from its own C++ threads (``PyGILState_Ensure``), and
its threads can outlive ``Server`` objects released moments before exit. The tests have all
run and reported by then, so skipping the interpreter's teardown loses nothing, and the exit
status is pytest's own. The server process does not depend on this: its graceful shutdown and
exit status 0 are tested in test_shutdown.py.

A test that failed once and passed on its rerun (``--reruns 1``) is still reported in full at the
end: the rerun plugin keeps only the second outcome, and a flaky test's first failure is the
only clue to what made it flaky.
"""

from __future__ import annotations

import os
import sys

import voice_agent  # noqa: F401  first: it limits numpy's BLAS threads before numpy loads
import pytest

_status: list[int] = []
_rerun_reports: list[pytest.TestReport] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":
        _rerun_reports.append(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for report in _rerun_reports:
        terminalreporter.write_sep("_", f"first failure of {report.nodeid} (passed on its rerun)")
        terminalreporter.write_line(report.longreprtext)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _status or os.environ.get("VOICE_AGENT_TESTS_FULL_TEARDOWN"):
        return  # a run that never finished, or someone debugging the teardown itself
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_status[-1])
