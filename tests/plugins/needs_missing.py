"""Test plugin whose own dependency is not installed."""

from __future__ import annotations

import relshard_no_such_dependency  # noqa: F401
