"""Every multi-process test runs its ranks under a deadline (``tests.helpers.ranks``): a hung
rank prints every thread's stack and exits, so CI fails with where each rank was instead of
hanging (the DDP test that hung in 3 of 11 runs left nothing to read)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import ranks


def _hang(rank: int) -> None:
    time.sleep(3600)


def test_a_hung_rank_dumps_its_stack_and_fails_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ranks, "RANK_DEADLINE_S", 2.0)  # forked ranks see the patched value
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"exit|signal|process"):
        ranks.run_ranks(_hang, 2)
    assert time.monotonic() - t0 < 60
    err = capfd.readouterr().err
    assert "Timeout" in err and "in _hang" in err
