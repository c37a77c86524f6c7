"""A teacher behind an OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, OpenAI...).

Each request is one ``POST {base_url}/chat/completions`` with JSON
``{"model", "messages", "temperature", "max_tokens"}`` (stdlib ``urllib``), the reply's
``choices[0].message.content`` being the rationale. The API key is read from the environment
variable named by ``api_key_env`` (never from a config file) and sent as ``Authorization: Bearer``.

Failures: HTTP 429 / 5xx, connection errors and timeouts are retried ``max_retries`` times with
exponential backoff ``backoff_s * 2**attempt`` (429 honours ``Retry-After``, capped at 30 s);
other HTTP errors and replies that are not a chat completion are not retried. With
``errors="raise"`` (default) the first unrecoverable failure raises a :class:`TeacherError`
once the requests already in flight have finished (their results are emitted first, so
:func:`~posrft.skeleton.teachers.distill_rationales` caches them); with ``errors="mask"`` the
request becomes ``None`` with status ``"failed"``. ``concurrency`` requests run at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed

from posrft.skeleton.teacher_base import (
    TeacherBase,
    TeacherError,
    TeacherRequest,
    TeacherResponseError,
    TeacherTimeoutError,
    build_messages,
)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class _Retryable(Exception):
    def __init__(self, message: str, wait_s: float | None = None, timeout: bool = False):
        super().__init__(message)
        self.wait_s, self.timeout = wait_s, timeout


class OpenAITeacher(TeacherBase):
    """``OpenAITeacher(base_url="http://127.0.0.1:8000/v1", model="qwen2.5-7b-instruct")``."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None,
                 timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 1.0,
                 concurrency: int = 4, temperature: float = 0.0, max_tokens: int = 512,
                 errors: str = "raise") -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must name the served model")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or concurrency < 1 or max_tokens < 1:
            raise ValueError(
                f"need timeout_s > 0 ({timeout_s}), max_retries >= 0 ({max_retries}), backoff_s "
                f">= 0 ({backoff_s}), concurrency >= 1 ({concurrency}), max_tokens >= 1 "
                f"({max_tokens})")
        if errors not in ("raise", "mask"):
            raise ValueError(f"errors must be 'raise' or 'mask', got {errors!r}")
        self.api_key: str | None = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(f"api_key_env: environment variable {api_key_env!r} is not set "
                                 "(export the key there; never put it in a config file)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.max_retries = model, float(timeout_s), int(max_retries)
        self.backoff_s, self.concurrency = float(backoff_s), int(concurrency)
        self.temperature, self.max_tokens, self.errors = float(temperature), int(max_tokens), errors
        settings = json.dumps([model, self.temperature, self.max_tokens])
        # The URL is left out on purpose: the same model served on another port is the same teacher.
        self.name = f"openai:{model}@{hashlib.sha256(settings.encode()).hexdigest()[:8]}"

    def payload(self, req: TeacherRequest) -> dict:
        return {"model": self.model, "messages": build_messages(req),
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _post_once(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code in RETRY_STATUS:
                wait = None
                if e.code == 429 and e.headers.get("Retry-After", "").strip().isdigit():
                    wait = min(float(e.headers["Retry-After"]), 30.0)
                raise _Retryable(f"HTTP {e.code}: {detail}", wait) from None
            raise TeacherError(f"POST {self.url} returned HTTP {e.code}: {detail}") from None
        except (TimeoutError, socket.timeout) as e:
            raise _Retryable(str(e) or "timed out", timeout=True) from None
        except urllib.error.URLError as e:
            is_timeout = isinstance(e.reason, (TimeoutError, socket.timeout))
            raise _Retryable(f"connection error: {e.reason}", timeout=is_timeout) from None
        except (ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"connection error: {e!r}") from None
        return self._parse(raw)

    def _parse(self, raw: bytes) -> str:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TeacherResponseError(
                f"response from {self.url} is not JSON: {raw[:200]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) \
                or not data["choices"]:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise TeacherResponseError(
                f"response from {self.url} has no non-empty 'choices' list (got {keys})")
        msg = data["choices"][0].get("message") if isinstance(data["choices"][0], dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            raise TeacherResponseError(
                f"response from {self.url} has no string 'choices[0].message.content' "
                f"(got choices[0] = {json.dumps(data['choices'][0])[:200]})")
        return content

    def complete(self, req: TeacherRequest) -> str:
        """The endpoint's answer for ``req``, retried on transient failures."""
        body = json.dumps(self.payload(req)).encode()
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(body)
            except _Retryable as e:
                if attempt == self.max_retries:
                    tries = f"{attempt + 1} attempt(s)"
                    if e.timeout:
                        raise TeacherTimeoutError(
                            f"POST {self.url} timed out after {self.timeout_s:g} s ({tries}); "
                            "raise timeout_s or check the server") from None
                    raise TeacherError(f"POST {self.url} failed after {tries}: {e}") from None
                time.sleep(e.wait_s if e.wait_s is not None else self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _run(self, requests: list[TeacherRequest], emit) -> None:
        first_error: TeacherError | None = None
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = {pool.submit(self.complete, r): i for i, r in enumerate(requests)}
            # Results are emitted from this thread as they arrive, so a cache writer needs no lock.
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    text = fut.result()
                except CancelledError:
                    continue
                except TeacherError as e:
                    if self.errors == "mask":
                        emit(i, None, str(e))
                        continue
                    if first_error is None:
                        first_error = e
                        for other in futures:
                            other.cancel()  # queued ones; those in flight still finish and emit
                    continue
                emit(i, text)
        if first_error is not None:
            raise first_error
