"""Test plugin that fails while being imported (a bug in the plugin itself)."""

from __future__ import annotations

raise RuntimeError("this plugin is broken on purpose")
