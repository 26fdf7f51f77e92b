"""An LLM judge client for any OpenAI-compatible chat endpoint: cached, retried, with its failures counted.

The evaluation's judges (Big Bench Audio's CORRECT/INCORRECT grader, Wild Speech's checklist rubric) and the
MGRD loop's optional filter judges share this client. What it guarantees:

- **Cache on disk, keyed by the request.** The key is the sha256 of the canonical JSON of (model, messages,
  sampling parameters); the reply is stored as `CACHE/<key[:2]>/<key>.json` (written atomically), so a rerun,
  a rescoring or a resumed run asks the endpoint nothing it already asked. `replay=True` never calls the
  endpoint: a request missing from the cache is an error.
- **Retries with backoff.** Connection errors, timeouts, HTTP 429 and 5xx are retried `max_retries` times,
  waiting `backoff_s * 2**attempt` (capped at `max_backoff_s`) between tries; other HTTP errors (400, 401,
  404, ...) are not retried. When the tries run out the call raises `JudgeError`: callers record it as an
  error, never as a verdict.
- **Counts.** `stats` holds requests, cache hits, endpoint calls, retries, failures and invalid replies
  (`judge(...)` counts a reply its parser cannot read as invalid; it is reported, never silently dropped).

This module knows no benchmark: templates and parsers come from the caller (`mgrd.eval.judges`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = (408, 409, 429)  # plus every 5xx


class JudgeError(RuntimeError):
    """The judge could not be asked (endpoint down after the retries, an HTTP error, a replay cache miss)."""


@dataclass
class JudgeConfig:
    """Where and how to ask the judge.

    Attributes:
        base_url: the endpoint's OpenAI base URL, e.g. `http://localhost:8000/v1`.
        model: the judge model name sent with each request.
        api_key: the bearer key ("EMPTY" for endpoints that need none).
        cache_dir: folder of cached replies; None disables the cache.
        temperature, top_p, max_tokens: sampling sent with each request (part of the cache key).
        max_retries: retries after the first try, for connection errors, timeouts, 429 and 5xx.
        backoff_s: the first wait; each retry doubles it, up to `max_backoff_s`.
        timeout_s: per-request timeout.
        replay: answer from the cache only; a miss raises `JudgeError`.
    """

    base_url: str | None = None
    model: str = "gpt-4o-mini"
    api_key: str = "EMPTY"
    cache_dir: str | os.PathLike | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 120.0
    replay: bool = False


@dataclass
class JudgeStats:
    requests: int = 0
    cache_hits: int = 0
    calls: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failures: int = 0
    invalid: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Judged(Generic[T]):
    """One judged request: the reply text, the parsed verdict (None = the reply held none) and whether it came
    from the cache."""

    text: str
    verdict: T | None
    cached: bool

    @property
    def invalid(self) -> bool:
        return self.verdict is None


@dataclass
class Judge:
    """A cached, retrying chat client for judging (see the module docstring)."""

    config: JudgeConfig
    stats: JudgeStats = field(default_factory=JudgeStats)
    sleep: Callable[[float], None] = time.sleep
    _client: Any = None

    def __post_init__(self):
        if self.config.base_url is None and not self.config.replay:
            raise ValueError("a judge needs base_url (an OpenAI-compatible endpoint), or replay=True with a cache")
        if self.config.replay and self.config.cache_dir is None:
            raise ValueError("judge replay needs cache_dir (the cached replies to replay)")

    # ------------------------------------------------------------------------------------------ public

    def cache_key(self, messages: list[dict]) -> str:
        """sha256 of the canonical JSON of the request (model, messages, sampling parameters)."""
        request = {"model": self.config.model, "messages": messages, "params": self._params()}
        canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def complete(self, messages: list[dict]) -> tuple[str, bool]:
        """The judge's reply text to `messages`, and whether it came from the cache.

        Raises:
            JudgeError: no reply after the retries, a non-retryable HTTP error, or a replay cache miss.
        """
        self.stats.requests += 1
        key = self.cache_key(messages)
        cached = self._cache_get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached, True
        if self.config.replay:
            self.stats.failures += 1
            raise JudgeError(f"judge replay: request {key[:12]} is not in the cache {self.config.cache_dir}")
        text = self._ask(messages)
        self._cache_put(key, messages, text)
        return text, False

    def judge(self, prompt: str, parse: Callable[[str], T | None], system: str | None = None) -> Judged[T]:
        """Ask one user prompt (optionally after a system prompt) and parse the reply; an unreadable reply is
        counted in `stats.invalid` and comes back with `verdict=None`."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text, cached = self.complete(messages)
        verdict = parse(text)
        if verdict is None:
            self.stats.invalid += 1
        return Judged(text, verdict, cached)

    # ------------------------------------------------------------------------------------------ HTTP

    def params(self) -> dict:
        """The sampling parameters sent with (and hashed into the cache key of) every request."""
        return self._params()

    def _params(self) -> dict:
        c = self.config
        return {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}

    def _client_once(self):
        if self._client is None:
            try:
                import openai
            except ImportError as err:
                raise JudgeError(f"the judge needs the openai package (pip install openai): {err}") from None
            # retries are ours (counted, with our backoff), so the client's own are off
            self._client = openai.OpenAI(base_url=self.config.base_url, api_key=self.config.api_key,
                                         timeout=self.config.timeout_s, max_retries=0)
        return self._client

    def _ask(self, messages: list[dict]) -> str:
        import openai

        client = self._client_once()
        last = None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.stats.retries += 1
                self.sleep(min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s))
            self.stats.calls += 1
            try:
                reply = client.chat.completions.create(model=self.config.model, messages=messages, **self._params())
                return reply.choices[0].message.content or ""
            except openai.APIStatusError as err:
                last = f"HTTP {err.status_code}: {_short(err)}"
                if err.status_code < 500 and err.status_code not in RETRY_STATUS:
                    break
            except (openai.APIConnectionError, openai.APITimeoutError) as err:
                last = f"{type(err).__name__}: {_short(err)}"
            log.warning("judge request failed (try %d of %d): %s", attempt + 1, self.config.max_retries + 1, last)
        self.stats.failures += 1
        raise JudgeError(f"judge at {self.config.base_url} failed: {last}")

    # ------------------------------------------------------------------------------------------ cache

    def _cache_path(self, key: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        return Path(self.config.cache_dir) / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["reply"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            log.warning("%s: unreadable judge cache entry; asking again", path)
            return None

    def _cache_put(self, key: str, messages: list[dict], text: str) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"model": self.config.model, "params": self._params(), "messages": messages, "reply": text}
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        os.replace(tmp, path)


def _short(err: Exception, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
