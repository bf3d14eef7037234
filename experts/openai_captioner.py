"""Captioning through any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted
teacher model). The image goes as a data URL next to the prompt.

Per worker: bounded concurrency (a thread pool), a request rate limit, a timeout per request,
retries with exponential backoff on 429, 5xx and transport errors (honouring Retry-After), and a
persistent cache keyed by (model, prompt, image sha256, decoding settings) in SQLite, so a rerun
or a resumed build never pays for a caption twice. Only successes are cached. The API key is read
from the environment variable named in the config and is never logged or recorded.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.captioners import Captioner, outputs
from fusionweave.experts.pixels import decode_rgb, error_text

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MIME = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif", b"RIFF": "image/webp"}


class CaptionRequestError(RuntimeError):
    pass


def mime_of(data: bytes) -> str:
    return next((m for magic, m in MIME.items() if data.startswith(magic)), "application/octet-stream")


class RequestCache:
    """(request key) -> (caption, finish_reason) in SQLite; safe across threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS captions (key TEXT PRIMARY KEY, caption TEXT, finish TEXT)")

    def _db(self) -> sqlite3.Connection:
        if getattr(self._local, "db", None) is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return self._local.db

    def get(self, key: str) -> tuple[str, str] | None:
        row = self._db().execute("SELECT caption, finish FROM captions WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, caption: str, finish: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO captions VALUES (?, ?, ?)", (key, caption, finish))

    def __len__(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM captions").fetchone()[0]


class RateLimiter:
    """At most `per_second` request starts per second across the worker's threads."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


class OpenAICaptioner(Captioner):
    kind = "openai"

    def __init__(self, base_url: str, model: str, cache_path: str | Path, resources: Resources = Resources(),
                 api_key_env: str | None = "OPENAI_API_KEY", max_tokens: int = 512, temperature: float = 0.0,
                 top_p: float = 1.0, concurrency: int = 8, timeout: float = 120.0, retries: int = 4,
                 backoff: float = 1.0, rate_limit: float | None = None, max_backoff: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.model, self.cache_path, self.resources = model, str(cache_path), resources
        self.api_key_env = api_key_env
        self.decoding = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff, self.rate_limit = backoff, max_backoff, rate_limit
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    def setup(self) -> None:
        import httpx

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env or "", "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout,
                                    limits=httpx.Limits(max_connections=self.concurrency))
        self._cache = RequestCache(self.cache_path)
        self._limit = RateLimiter(self.rate_limit)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="caption")

    def request_key(self, prompt: str, image: bytes) -> str:
        ident = {"model": self.model, "prompt": prompt, "image": hashlib.sha256(image).hexdigest(), **self.decoding}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def body(self, prompt: str, image: bytes) -> dict[str, Any]:
        url = f"data:{mime_of(image)};base64,{base64.b64encode(image).decode()}"
        return {"model": self.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]}], **self.decoding}

    def ask(self, prompt: str, image: bytes) -> tuple[str, str]:
        """(caption, finish_reason) for one image, from the cache or the server."""
        import httpx

        key = self.request_key(prompt, image)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats["cache_hits"] += 1
            return hit
        body = self.body(prompt, image)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self._limit.wait()
            delay = min(self.max_backoff, self.backoff * 2 ** attempt)
            try:
                self.stats["requests"] += 1
                r = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout}s"
            except httpx.TransportError as err:
                last = f"transport error: {type(err).__name__}"
            else:
                if r.status_code == 200:
                    caption, finish = self.parse(r)
                    self._cache.put(key, caption, finish)
                    return caption, finish
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code not in RETRY_STATUS:
                    break
                after = r.headers.get("retry-after")
                if after and after.replace(".", "", 1).isdigit():
                    delay = min(self.max_backoff, float(after))
            if attempt < self.retries:
                time.sleep(delay)
        raise CaptionRequestError(f"{last} (after {attempt + 1} attempts)")

    @staticmethod
    def parse(r: Any) -> tuple[str, str]:
        try:
            choice = r.json()["choices"][0]
            content = choice["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}")
            return content.strip(), str(choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise CaptionRequestError(f"malformed response: {type(err).__name__}: {err}; body {r.text[:200]!r}") from None

    def process(self, batch: Batch) -> Batch:
        def one(i: int) -> tuple[str, str, str]:
            try:
                image = bytes(batch["image"][i])
                decode_rgb(image)  # an image no decoder reads is not worth a paid request
                c, f = self.ask(str(batch["prompt"][i]), image)
                return c, f, ""
            except Exception as err:  # noqa: BLE001 - the row's error, the batch goes on
                return "", "", error_text(err)

        got = list(self._pool.map(one, range(len(batch["key"]))))
        return outputs(batch, [g[0] for g in got], [g[1] for g in got], [g[2] for g in got])

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
            self._client.close()

    def info(self) -> dict[str, Any]:
        # base_url may carry credentials in some deployments: keep only scheme and host
        from urllib.parse import urlsplit

        u = urlsplit(self.base_url)
        return {"name": self.name, "kind": self.kind, "model": self.model, "server": f"{u.scheme}://{u.hostname}",
                **self.decoding}
