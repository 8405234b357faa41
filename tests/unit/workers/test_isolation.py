from relshard.workers.isolation import ChildFailure, IsolatedRunner

HANDLER = "tests.plugins.crashy:segfault"


def _runner(**kw) -> IsolatedRunner:
    opts = {"timeout_s": 20.0, "crash_retries": 1}
    opts.update(kw)
    return IsolatedRunner(HANDLER, {}, **opts)


def test_results_come_back_from_the_child():
    runner = _runner()
    try:
        assert runner.call(b"abc") == b"ABC"
        assert runner.call(b"def") == b"DEF"
        assert runner.restarts == 0
    finally:
        runner.close()


def test_segfault_is_retried_then_reported_and_the_runner_recovers():
    runner = _runner(crash_retries=2)
    try:
        res = runner.call(b"crash me")
        assert isinstance(res, ChildFailure)
        assert res.reason == "worker_crash"
        assert "SIGSEGV" in res.detail
        assert res.attempts == 3
        assert runner.call(b"fine") == b"FINE"
    finally:
        runner.close()


def test_abort_names_the_signal():
    runner = _runner(crash_retries=0)
    try:
        res = runner.call(b"abort")
        assert isinstance(res, ChildFailure) and "SIGABRT" in res.detail
    finally:
        runner.close()


def test_hang_times_out_and_the_next_call_works():
    runner = _runner(timeout_s=1.0, crash_retries=0)
    try:
        res = runner.call(b"hang")
        assert isinstance(res, ChildFailure)
        assert res.reason == "timeout"
        assert runner.call(b"ok") == b"OK"
    finally:
        runner.close()


def test_a_streamed_batch_rejects_only_the_input_that_crashed():
    runner = _runner(crash_retries=1)
    try:
        payloads = [b"a", b"b", b"crash here", b"c", b"d", b"abort", b"e"]
        out = runner.call_many(payloads)
        assert out[:2] == [b"A", b"B"] and out[3:5] == [b"C", b"D"] and out[6] == b"E"
        for bad in (out[2], out[5]):
            assert isinstance(bad, ChildFailure) and bad.reason == "worker_crash"
            assert bad.attempts == 2  # the first try in the stream, one retry alone
        assert runner.restarts == 4
    finally:
        runner.close()


def test_a_hang_in_a_streamed_batch_times_out_alone():
    runner = _runner(timeout_s=1.0, crash_retries=0)
    try:
        out = runner.call_many([b"x", b"hang", b"y"])
        assert out[0] == b"X" and out[2] == b"Y"
        assert isinstance(out[1], ChildFailure) and out[1].reason == "timeout"
    finally:
        runner.close()


def test_large_payloads_are_not_sent_ahead_and_still_come_back():
    big = b"p" * (300 * 1024)  # bigger than a pipe's buffer: sent one at a time
    runner = _runner()
    try:
        out = runner.call_many([big, b"small", big, b"crash", big])
        assert out[0] == out[2] == out[4] == big.upper()
        assert out[1] == b"SMALL" and isinstance(out[3], ChildFailure)
    finally:
        runner.close()


def test_the_child_does_not_rerun_the_parents_main_script():
    # spawn would import the parent's __main__ (pytest's script here, Ray's
    # default_worker.py in a worker, which imports all of Ray) in every child
    import sys

    assert "pytest" in sys.modules
    runner = IsolatedRunner("tests.plugins.crashy:main_modules", {}, timeout_s=20.0,
                            crash_retries=0)
    try:
        assert runner.call(b"") == b""
    finally:
        runner.close()
