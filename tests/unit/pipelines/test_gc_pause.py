"""The collector is off inside a batch and back as it was after, errors included."""

from __future__ import annotations

import gc

import pytest

from relshard.pipelines.gc_pause import gc_paused


def test_the_collector_is_paused_and_restored():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("a failing batch")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()
