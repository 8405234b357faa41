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
