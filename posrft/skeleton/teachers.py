"""Teachers for Causal Reasoning Distillation: the factory and the cached distillation loop.

* :func:`make_teacher` builds a teacher from a recipe entry:
  ``"kinematic"`` | ``{"kind": "kinematic"}`` (:class:`KinematicTeacher`, offline, deterministic),
  ``{"kind": "hf", "model_path": ...}`` (:class:`HFTeacher`, a local HF model),
  ``{"kind": "openai", "base_url": ..., "model": ..., "api_key_env": ..., "timeout_s": ...}``
  (:class:`OpenAITeacher`). Other keys are the constructor's keyword arguments; unknown keys and
  inline secrets (``api_key``) are rejected.
* :func:`distill_rationales` asks a teacher for the rationales of many requests through a JSONL
  cache: one line per finished request ``{"key", "teacher", "fmt", "label", "status",
  "rationale", "raw"}``, keyed by :func:`~posrft.skeleton.teacher_base.request_key` (content hash
  of the joints, format, label, candidates, description and teacher name). Each line is appended
  with one ``write`` then flushed and fsynced as soon as the teacher emits it, so a failing
  endpoint loses nothing already obtained and a rerun asks only for the missing requests.
  ``"ok"`` and ``"invalid"`` outcomes are cached (``retry_invalid=True`` asks again for invalid
  ones); ``"failed"`` ones never are.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from posrft.body.formats import get_format
from posrft.skeleton.teacher_base import (
    LABEL_PREFIX,
    Teacher,
    TeacherBase,
    TeacherError,
    TeacherRequest,
    TeacherResponseError,
    TeacherResult,
    TeacherTimeoutError,
    build_messages,
    check_requests,
    ends_with_label,
    is_valid_rationale,
    request_key,
)
from posrft.skeleton.teacher_kinematic import KinematicTeacher

logger = logging.getLogger("posrft.skeleton")

__all__ = [
    "LABEL_PREFIX", "Teacher", "TeacherBase", "TeacherError", "TeacherRequest",
    "TeacherResponseError", "TeacherResult", "TeacherTimeoutError", "KinematicTeacher",
    "HFTeacher", "OpenAITeacher", "build_messages", "ends_with_label", "is_valid_rationale",
    "request_key", "make_teacher", "distill_rationales", "load_cache",
]  # fmt: skip


def __getattr__(name: str):  # HF / OpenAI teachers import lazily (transformers is heavy)
    if name == "HFTeacher":
        from posrft.skeleton.teacher_hf import HFTeacher

        return HFTeacher
    if name == "OpenAITeacher":
        from posrft.skeleton.teacher_openai import OpenAITeacher

        return OpenAITeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _teacher_class(kind: str):
    if kind == "kinematic":
        return KinematicTeacher
    if kind == "hf":
        from posrft.skeleton.teacher_hf import HFTeacher

        return HFTeacher
    if kind == "openai":
        from posrft.skeleton.teacher_openai import OpenAITeacher

        return OpenAITeacher
    raise ValueError(f"teacher kind {kind!r} is unknown; expected one of kinematic, hf, openai")


def make_teacher(spec: dict[str, Any] | str) -> Teacher:
    """A teacher from a recipe entry (module docstring); ``ValueError`` names a bad key."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"teacher spec must be a dict or a kind name, got {type(spec).__name__}")
    if "kind" not in spec:
        raise ValueError("teacher spec needs 'kind' (one of kinematic, hf, openai)")
    opts = {k: v for k, v in spec.items() if k != "kind"}
    if "api_key" in opts:
        raise ValueError("teacher spec: 'api_key' is not allowed in a config; put the key in an "
                         "environment variable and name it with 'api_key_env'")
    cls = _teacher_class(str(spec["kind"]))
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"teacher spec (kind {spec['kind']!r}): unknown key(s) {unknown}; "
                         f"allowed: {allowed}")
    missing = [p for p, v in params.items()
               if p != "self" and v.default is inspect.Parameter.empty and p not in opts]
    if missing:
        raise ValueError(f"teacher spec (kind {spec['kind']!r}): missing required key(s) {missing}")
    return cls(**opts)


def load_cache(path: Path | None) -> dict[str, dict]:
    """``key -> record`` from a JSONL cache (later lines win); unreadable lines are skipped with
    a warning naming them (a torn last line after a crash)."""
    if path is None or not Path(path).exists():
        return {}
    out: dict[str, dict] = {}
    bad: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.append(n)
                continue
            if (not isinstance(rec, dict) or not isinstance(rec.get("key"), str)
                    or rec.get("status") not in ("ok", "invalid")
                    or (rec["status"] == "ok" and not isinstance(rec.get("rationale"), str))):
                bad.append(n)
                continue
            out[rec["key"]] = rec
    if bad:
        logger.warning("teacher cache %s: skipped %d unreadable line(s) %s", path, len(bad),
                       bad[:10])
    return out


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class _CacheWriter:
    """Appends one JSON line per record: a single ``write``, then ``flush`` + ``fsync``."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.fh, self.written = path, None, 0
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
            self.fh = open(path, "a", encoding="utf-8")
            if torn:  # end a line torn by a crash so the next record starts on its own line
                self.fh.write("\n")

    def append(self, record: dict) -> None:
        if self.fh is None:
            return
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.written += 1

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def distill_rationales(teacher: Teacher, requests: Sequence[TeacherRequest],
                       cache_path: Path | str | None = None, *,
                       retry_invalid: bool = False,
                       cache_only: bool = False) -> tuple[list[str | None], dict[str, int]]:
    """Rationales for ``requests`` (``None`` where invalid or failed) and counts.

    Stats: ``total``, ``ok``, ``invalid``, ``failed``, ``cached`` (answered from the cache) and
    ``requested`` (sent to the teacher; identical requests are asked once). A
    :class:`TeacherError` is re-raised with how many rationales the cache holds for this batch.
    ``cache_only=True`` never calls the teacher (e.g. non-main ranks reading what rank 0 wrote):
    requests missing from the cache count as ``failed``.
    """
    requests = list(requests)
    check_requests(requests)
    path = Path(cache_path) if cache_path is not None else None
    keys = [request_key(r, teacher.name) for r in requests]
    cache = load_cache(path)
    results: dict[str, dict] = {}
    for k in keys:
        rec = cache.get(k)
        if rec is not None and (rec["status"] == "ok" or not retry_invalid):
            results[k] = rec
    cached = sum(k in results for k in keys)
    todo = [] if cache_only else list(dict.fromkeys(k for k in keys if k not in results))
    first = {k: keys.index(k) for k in todo}
    writer = _CacheWriter(None if cache_only else path)

    def on_result(j: int, res: TeacherResult) -> None:
        k = todo[j]
        req = requests[first[k]]
        rec = {"key": k, "teacher": teacher.name, "fmt": get_format(req.fmt).name,
               "label": req.label, "status": res.status, "rationale": res.text, "raw": res.raw}
        if res.status == "failed":
            rec["error"] = res.error
        results[k] = rec
        if res.status != "failed":
            writer.append(rec)

    try:
        sub = [requests[first[k]] for k in todo]
        if sub:
            if "on_result" in inspect.signature(teacher.rationales).parameters:
                teacher.rationales(sub, on_result=on_result)
            else:  # a third-party teacher without streaming: record everything at the end
                for j, text in enumerate(teacher.rationales(sub)):
                    ok = text is not None and is_valid_rationale(text, sub[j].label)
                    status = "ok" if ok else "invalid"
                    on_result(j, TeacherResult(text if ok else None, status, text))
    except TeacherError as e:
        held = sum(1 for k in set(keys) if k in results and results[k]["status"] != "failed")
        where = f"the cache {path}" if path is not None else "no cache (cache_path=None)"
        raise type(e)(
            f"{e} -- {writer.written} new rationale(s) were saved to {where} before the failure "
            f"({held} of {len(set(keys))} distinct requests now done); rerun to ask only for the "
            "missing ones") from e
    finally:
        writer.close()

    texts: list[str | None] = []
    stats = {"total": len(requests), "ok": 0, "invalid": 0, "failed": 0, "cached": cached,
             "requested": len(todo)}
    for k in keys:
        rec = results.get(k, {"status": "failed", "rationale": None})
        stats[rec["status"]] += 1
        texts.append(rec["rationale"] if rec["status"] == "ok" else None)
    return texts, stats
