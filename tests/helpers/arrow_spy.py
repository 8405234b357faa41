"""Record what pyarrow's readers are handed (tests that no Python object reaches them)."""

from __future__ import annotations

from typing import Any

import pytest


def record_sources(monkeypatch: pytest.MonkeyPatch,
                   targets: list[tuple[Any, str]]) -> list[object]:
    """Wrap each ``(module, function name)`` so the first argument of every call is
    appended to the list returned (the call itself goes through unchanged)."""
    handed: list[object] = []

    def spy(real: Any) -> Any:
        def call(source: Any, *args: Any, **kwargs: Any) -> Any:
            handed.append(source)
            return real(source, *args, **kwargs)
        return call

    for module, name in targets:
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    return handed
