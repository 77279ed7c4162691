from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    from tests.lab import test_kill_recovery as k

    if k.KILL_RESULTS:
        tr = terminalreporter
        tr.write_sep("-", "kill at every step: final state")
        tr.write_line(f"{'storage':<9} {'step':<18} {'signal+then':<15} {'final state':<12} data check")
        for storage, point, then, state, data in k.KILL_RESULTS:
            tr.write_line(f"{storage:<9} {point:<18} {then:<15} {state:<12} {data}")
