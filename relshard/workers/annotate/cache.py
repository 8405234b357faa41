"""A content-addressed cache of model answers, on local disk or any fsspec URL.

The key is the SHA-256 of everything that decides an answer: the backend and
model, the generation parameters, the prompt version, and the request itself
(messages, with the images as digests of their bytes). A re-run or a resume that
asks the same thing reads the answer instead of paying for the call again.
Entries are small JSON files ``ab/abcdef....json``, written atomically on local
disk (temporary name, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from typing import Any

import fsspec

from relshard.shards.layout import is_local
from relshard.workers.annotate.prompts import ChatRequest

log = logging.getLogger(__name__)


def cache_key(identity: dict[str, Any], request: ChatRequest) -> str:
    """SHA-256 over the backend identity (model, parameters, prompt version) and request."""
    blob = json.dumps({"identity": identity, "request": request.fingerprint()},
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class ResponseCache:
    """Answers by key under ``url`` (a folder path or an fsspec URL such as ``s3://b/p``)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._local = is_local(self.fs)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer text, or None."""
        path = self._path(key)
        try:
            with self.fs.open(path, "rb") as fh:
                entry = json.loads(fh.read())
        except (FileNotFoundError, ValueError):
            self.misses += 1
            return None
        except OSError as exc:
            log.warning("response cache read failed (%s); calling the model", exc)
            self.misses += 1
            return None
        self.hits += 1
        return str(entry["text"])

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        """Store an answer; a failing store is logged, never fatal."""
        body = json.dumps({"text": text, "meta": meta or {}}).encode()
        path = self._path(key)
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if self._local:
                tmp = f"{path}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "wb") as fh:
                    fh.write(body)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, body)
        except OSError as exc:
            log.warning("response cache write failed (%s)", exc)
