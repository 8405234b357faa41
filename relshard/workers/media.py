"""The media stage: decode an input, detect its subjects, encode frames and crops.

Decoding and detection run together, in the isolated child process when
``decode.isolate`` is on, so raw frames never leave the process that made them:
what comes back is compact (JPEG frames, crops, detections). The
handler :func:`relshard.workers.media_work.prepare_payload` is what the child runs
(that module holds the work, so this one stays light: the worker that runs the stage
imports no decoder); :class:`MediaStage` is the Stage the pipeline schedules.

``followers``: cheap stateless stages (the heuristic annotator) that run right
after, on the same input, in the same process — in the child when isolated — so an
input crosses the pipe once and what comes back is already the row the shard
writer takes (:meth:`MediaStage.process_payloads`); the worker only forwards bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from relshard.plugins import import_plugins
from relshard.shards.item import WorkItem
from relshard.spec import DecodeSpec, DetectSpec, Resources
from relshard.workers.allocator import keep_freed_memory
from relshard.workers.isolation import ChildFailure, IsolatedRunner, shared_runner
from relshard.workers.stage import Stage

STAGE = "decode"
HANDLER = "relshard.workers.media_work:prepare_payload"
# Inputs per Ray task when decode.batch_size is not set (bench/README.md, issue #17).
# Between two tasks the decode child waits for Ray to finish one task and start the
# next (~0.1 s on a busy 2-core node, estimated from the figures below), so a task
# holds ~1 s of work: 256 images (~5 ms each) or 16 videos (~50-150 ms for 8 frames).
# On 6,000 images, tasks of 64 ran at 179 img/s and of 256 at 226 img/s.
IMAGE_BATCH = 256
VIDEO_BATCH = 16


@lru_cache(maxsize=8)
def load_followers(blob: bytes) -> list[Stage]:
    """The follower stages a :class:`MediaStage` carries as bytes, unpickled once a process."""
    followers: list[Stage] = pickle.loads(blob)  # noqa: S301 - our own stages (see MediaStage)
    return followers


class MediaStage(Stage):
    """Decode + detect (+ encode), optionally isolated in a child process, then the
    ``followers`` on each input in the same process."""

    name = STAGE

    def __init__(self, decode: DecodeSpec, detect: DetectSpec, plugins: list[str] | None = None,
                 followers: Sequence[Stage] = (), video_share: float = 0.0) -> None:
        self.decode = decode
        self.detect = detect
        self.plugins = plugins or []
        # The followers travel as pickle bytes (our own stage objects, never shard data;
        # spawn pickled them before): the worker holds them without importing their
        # modules (the heuristic imports OpenCV), the child unpickles them after its
        # plugins are imported.
        self._followers_blob = pickle.dumps(list(followers))
        self.batch_size = decode.batch_size or (VIDEO_BATCH if video_share >= 0.5
                                                else IMAGE_BATCH)
        self.resources: Resources = decode.resources
        # the child gets this through spawn (our own objects, never shard data)
        self._config: dict[str, Any] = {
            "decode": decode.model_dump_json(), "detect": detect.model_dump_json(),
            "num_cpus": self.resources.num_cpus, "followers": self._followers_blob}
        self._key = "|".join([self._config["decode"], self._config["detect"], *self.plugins,
                              *(f.config_key() for f in followers)])

    @property
    def followers(self) -> list[Stage]:
        return load_followers(self._followers_blob)

    def takes_payloads(self) -> bool:
        """Isolated: inputs go to the child as bytes and come back as the writer's rows."""
        return self.decode.isolate

    def _runner(self) -> IsolatedRunner:
        return shared_runner(
            self._key,
            lambda: IsolatedRunner(
                HANDLER, self._config, timeout_s=self.decode.timeout_s,
                crash_retries=self.decode.crash_retries,
                max_memory_mb=self.decode.max_memory_mb, plugins=self.plugins,
            ),
            HANDLER,
        )

    def process_payloads(self, payloads: list[bytes]) -> list[bytes]:
        """WorkItem bytes in, WorkItem bytes out, through the child; the worker decodes
        only the inputs the child failed on (to record why)."""
        out = []
        for payload, result in zip(payloads, self._runner().call_many(payloads), strict=True):
            if isinstance(result, ChildFailure):
                item = WorkItem.from_bytes(payload)
                result = item.fail(STAGE, result.reason, result.detail,
                                   attempts=result.attempts).to_bytes()
            out.append(result)
        return out

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        import_plugins(self.plugins)  # once per process: plugin decoders and detectors
        if not self.decode.isolate:
            from relshard.workers import media_work

            keep_freed_memory()
            return media_work.prepare_items(self._config, items)
        live = [i for i, it in enumerate(items) if not it.rejected]
        results = self.process_payloads([items[i].to_bytes() for i in live])
        out = list(items)
        for i, blob in zip(live, results, strict=True):
            out[i] = WorkItem.from_bytes(blob)
        return out
