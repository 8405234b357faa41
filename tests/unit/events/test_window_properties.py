"""Windowing is total too (hypothesis): rare types, ties, one instant, extreme scales.

Every event of a sequence is in a window (count windows; time windows whose stride is
at most their span, with ``min_events`` 1); a window is a run of sorted positions with
stable indices; a sequence cut into parts gives exactly the windows of the whole; and
windows far shorter than the gaps between events cost what the events cost, not what
the time span does.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relshard.events.windows import (
    SeqContext,
    may_own_a_window,
    owned_windows,
    windows,
)
from relshard.spec import EventWindow

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sequences(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    span = 10.0 ** draw(st.floats(-6, 9))
    t0 = draw(st.sampled_from([0.0, 1.7e9]))
    shape = draw(st.sampled_from(["uniform", "one_instant", "rounded", "bursts"]))
    if shape == "one_instant":
        return np.full(n, t0)
    t = rng.uniform(0, span, n)
    if shape == "rounded":
        t = np.floor(t / (span / 7)) * (span / 7)
    elif shape == "bursts":
        t = rng.choice(t[: max(1, n // 30)], n) + rng.exponential(span * 1e-5, n)
    return np.sort(t0 + t)


@st.composite
def configs(draw: st.DrawFn, times: np.ndarray) -> EventWindow:
    if draw(st.booleans()):
        size = draw(st.integers(2, 400))
        return EventWindow(events=size, stride=draw(st.integers(1, size)), min_events=1)
    scale = max(float(times[-1] - times[0]), 1e-6)
    seconds = scale * 10.0 ** draw(st.floats(-9, 0.5))
    return EventWindow(seconds=seconds, stride=seconds * draw(st.floats(0.05, 1.0)),
                       min_events=1)


@SETTINGS
@given(data=st.data(), times=sequences())
def test_every_event_is_in_a_window_and_parts_agree_with_the_whole(data, times):
    cfg = data.draw(configs(times))
    wins = windows(times, cfg)
    assert len(wins) <= 4 * len(times) + 4096
    idx = [k for k, _, _ in wins]
    assert idx == sorted(set(idx))
    covered = np.zeros(len(times), dtype=bool)
    for _, a, b in wins:
        assert 0 <= a < b <= len(times)
        covered[a:b] = True
    assert covered.all()
    # cut anywhere: the part's own windows plus the rest's are the whole's
    cut = data.draw(st.integers(1, len(times)))
    if cut < len(times) and times[cut] > times[cut - 1]:
        head = owned_windows(times, cut, SeqContext(total=len(times), t_last=float(times[-1])),
                             cfg)
        ctx = SeqContext(offset=cut, t0=float(times[0]), t_prev=float(times[cut - 1]))
        tail = [(k, a + cut, b + cut) for k, a, b in owned_windows(times[cut:],
                                                                    len(times) - cut, ctx, cfg)]
        assert head + tail == wins
        assert may_own_a_window(len(times) - cut, float(times[-1]), ctx, cfg) == bool(tail)


def test_millisecond_windows_over_a_decade_cost_the_events_not_the_span():
    rng = np.random.default_rng(0)
    times = np.sort(1.7e9 + rng.uniform(0, 3.2e8, 500))  # ten years, 500 events
    wins = windows(times, EventWindow(seconds=1e-3, min_events=1))  # 3.2e11 windows of time
    assert len(wins) == len(np.unique(times))
