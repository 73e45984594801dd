"""Shared fixtures of the parity suite: a `record` fixture that collects the errors each
test reaches, printed as a table at the end of the run (`pytest parity_tests -rA`).

The twin runs single-threaded here: the parity models are tiny, and on a busy 2-core
machine torch's intra-op threads spin against each other (a 24-step sampling run took
14 s with 2 threads, 0.4 s with 1)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

_RESULTS: list[tuple[str, str, float, float | None]] = []


@pytest.fixture(autouse=True)
def _torch_float32_cpu():
    torch.set_default_dtype(torch.float32)
    yield


@pytest.fixture
def record(request):
    """record(quantity, reached, tolerance): note a measured error for the summary
    (tolerance None: reported, not asserted)."""

    def _record(quantity: str, reached: float, tolerance: float | None):
        _RESULTS.append((request.node.name, quantity, float(reached), tolerance))

    return _record


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("parity: reached vs tolerance")
    width = max(len(case) for case, *_ in _RESULTS)
    for case, quantity, reached, tolerance in _RESULTS:
        bound = "(reported)" if tolerance is None else f"(tol {tolerance:.0e})"
        terminalreporter.write_line(f"{case:<{width}}  {quantity:<38} {reached:10.3e}  {bound}")
