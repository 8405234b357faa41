"""relshard.shards loads its entry points on first use; .item alone pulls no pyarrow."""

from __future__ import annotations

import subprocess
import sys

import pytest

import relshard.shards as shards


def test_every_public_name_resolves_to_its_module_object() -> None:
    import relshard.shards.manifest as manifest
    import relshard.shards.writer as writer

    for name in shards.__all__:
        assert getattr(shards, name) is not None
    assert shards.ShardWriter is writer.ShardWriter
    assert shards.build_manifest is manifest.build_manifest
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = shards.Nope  # type: ignore[attr-defined]


def test_the_decode_child_imports_the_item_model_without_pyarrow() -> None:
    code = ("import sys, relshard.shards.item, relshard.workers.media; "
            "print('pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
