"""Output to (and input from) S3 through fsspec, against moto's S3 server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLES
from tests.helpers.loopback_cluster import free_port as _free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

moto_server = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="module")
def s3_env():
    if not moto_server.exists():
        pytest.skip("moto[server] is not installed (pip install 'relshard[dev]')")
    port = _free_port()
    proc = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        deadline = time.monotonic() + 30
        while True:
            try:
                fs = s3fs.S3FileSystem(skip_instance_cache=True)
                fs.ls("")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        fs.mkdir("inputs")
        fs.mkdir("shards")
        for p in sorted((SAMPLES / "images").iterdir()):
            fs.put_file(str(p), f"inputs/src/{p.name}")
        fs.pipe_file("inputs/src/broken.jpg", b"not a jpeg at all")
        yield env, fs
    finally:
        proc.kill()
        proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(tmp_path: Path, env: dict, out: str) -> subprocess.CompletedProcess:
    spec = tmp_path / "s3.yaml"
    spec.write_text(json.dumps({
        "name": "s3", "sources": [{"path": "s3://inputs/src"}],
        "decode": {"max_side": 256}, "output": {"path": out, "shard_max_samples": 3},
        "runtime": {"progress": False}}))
    return subprocess.run(
        [sys.executable, "-m", "relshard.cli", "run", str(spec), "--num-cpus", "2"],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=300,
    )


def test_run_writes_to_s3_with_the_same_commit_rules_and_resumes(s3_env, tmp_path):
    env, fs = s3_env
    out = "s3://shards/run1"
    first = _run(tmp_path, env, out)
    assert first.returncode == 0, first.stderr[-3000:]
    fs.invalidate_cache()
    manifest = json.loads(fs.cat_file("shards/run1/manifest.json"))
    n_images = len(list((SAMPLES / "images").iterdir()))
    assert manifest["totals"]["inputs_written"] == n_images
    assert manifest["totals"]["inputs_rejected"] == 1
    keys = []
    for shard in manifest["shardlist"]:
        with fs.open(f"shards/run1/{shard['url']}", "rb") as fh, tarfile.open(fileobj=fh) as tar:
            keys += [m.name.split(".", 1)[0] for m in tar if m.name.endswith(".json")]
    assert len(keys) == len(set(keys)) == n_images
    assert not [p for p in fs.find("shards/run1") if ".tmp" in p]

    # a unit left half-committed by a kill (tar, no index) and a temp file are cleared,
    # and a re-run finds everything done
    fs.pipe_file("shards/run1/shards/zz-orphan-0000.tar", b"\0" * 1024)
    fs.pipe_file("shards/run1/shards/.zz-orphan-0001.tar.tmp-abc", b"\0" * 10)
    again = _run(tmp_path, env, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done (resumed) │ " + str(n_images + 1) in again.stdout
    fs.invalidate_cache()
    names = [p.rsplit("/", 1)[-1] for p in fs.find("shards/run1/shards")]
    assert not [n for n in names if "orphan" in n]
    assert json.loads(fs.cat_file("shards/run1/manifest.json"))["shardlist"] == \
        manifest["shardlist"]
