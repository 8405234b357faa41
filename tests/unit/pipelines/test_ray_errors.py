"""relshard errors cross the Ray boundary typed (DESIGN §6: they pickle); text is a fallback
only for an error Ray could not ship."""

from __future__ import annotations

import pickle
import threading

import pytest

from relshard.errors import BackendError, RejectBudgetExceeded, RelshardError

ray_exceptions = pytest.importorskip("ray.exceptions")
from relshard.pipelines.ray_backend import relshard_error  # noqa: E402


class _Unpicklable(RelshardError):
    """A plugin's error holding a lock: Ray cannot ship it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _task_error(cause: BaseException) -> BaseException:
    try:
        raise cause
    except BaseException as exc:  # noqa: BLE001 - building Ray's wrapper around it
        import traceback

        tb = traceback.format_exc()
        return ray_exceptions.RayTaskError("write", tb, exc, proctitle="w", pid=1, ip="127.0.0.1")


def test_a_ray_task_error_gives_back_the_original_error() -> None:
    budget = RejectBudgetExceeded(7, 10, 0.5)
    found = relshard_error(_task_error(budget))
    assert type(found) is RejectBudgetExceeded
    assert (found.rejected, found.seen, found.fraction) == (7, 10, 0.5)


def test_the_dual_class_and_chains_are_unwrapped_to_the_cause() -> None:
    dual = _task_error(BackendError("server down", retryable=True)).as_instanceof_cause()
    found = relshard_error(dual)
    assert type(found) is BackendError and found.retryable and str(found) == "server down"
    try:
        try:
            raise dual
        except Exception as inner:
            raise RuntimeError("Ray Data wrapper") from inner
    except RuntimeError as outer:
        assert type(relshard_error(outer)) is BackendError


def test_every_relshard_error_pickles_so_ray_keeps_its_type() -> None:
    for err in (RejectBudgetExceeded(1, 2, 0.1), BackendError("x", True), RelshardError("y")):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and str(again) == str(err)


def test_fallback_only_when_ray_lost_the_type() -> None:
    lost = _task_error(_Unpicklable("the plugin failed."))
    assert type(lost.cause) is ray_exceptions.RayError  # Ray replaced it
    found = relshard_error(lost)
    assert type(found) is RelshardError and str(found) == "the plugin failed."
    assert relshard_error(_task_error(ValueError("a bug"))) is None
    assert relshard_error(RuntimeError("RejectBudgetExceeded in some text")) is None


@pytest.mark.ray
def test_a_real_ray_task_ships_the_typed_error(ray_session) -> None:  # noqa: ANN001
    ray = ray_session

    @ray.remote(max_retries=0)
    def fail() -> None:
        raise RejectBudgetExceeded(3, 4, 0.5)

    with pytest.raises(Exception) as info:
        ray.get(fail.remote())
    found = relshard_error(info.value)
    assert type(found) is RejectBudgetExceeded and found.seen == 4
