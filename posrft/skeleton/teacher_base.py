"""The teacher interface of Causal Reasoning Distillation (DESIGN.md §1 SkeletonLLM, stage 3).

A teacher turns a skeleton clip and its true label into a step-by-step rationale whose last
line is exactly ``Label: <label>``. A teacher never repairs an output: one that does not end
with the right label line is ``None`` (status ``"invalid"``), one it could not obtain is
``None`` (status ``"failed"``); :func:`posrft.skeleton.teachers.distill_rationales` counts both.

Shared here: :class:`TeacherRequest`, the :class:`Teacher` protocol, :class:`TeacherBase`
(validation + statuses; subclasses implement ``_run``), request checks that name the request
index, the prompt for language-model teachers (kinematic summary + candidates + true label),
and the cache key of a request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from posrft.body.formats import get_format
from posrft.skeleton.motion import analyse_motion, check_clip, describe, resolve_parts

LABEL_PREFIX = "Label: "
Status = Literal["ok", "invalid", "failed"]


class TeacherError(RuntimeError):
    """A teacher could not produce rationales (endpoint down, malformed responses...)."""


class TeacherTimeoutError(TeacherError):
    """An endpoint did not answer within the timeout, retries included."""


class TeacherResponseError(TeacherError):
    """An endpoint answered with something that is not a chat completion."""


@dataclass(frozen=True, eq=False)
class TeacherRequest:
    """One clip to explain. ``joints``: ``(T, J, 3)`` metres in format ``fmt`` (y up)."""

    joints: np.ndarray
    fmt: str
    label: str
    candidates: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class TeacherResult:
    """What a teacher produced for one request: ``text`` is set only when ``status == "ok"``."""

    text: str | None
    status: Status
    raw: str | None = None  # the unvalidated output (invalid ones are kept for inspection)
    error: str | None = None


OnResult = Callable[[int, TeacherResult], None]


@runtime_checkable
class Teacher(Protocol):
    name: str

    def rationales(self, requests: Sequence[TeacherRequest],
                   on_result: OnResult | None = None) -> list[str | None]: ...


def ends_with_label(text: str | None, label: str) -> bool:
    """True when the last non-empty line of ``text`` is ``Label: <label>`` (exact, stripped),
    or ends with `` Label: <label>`` and holds no other ``Label:``."""
    if not text or not label:
        return False
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return False
    last, want = lines[-1], LABEL_PREFIX + label.strip()
    if last == want:
        return True
    return last.endswith(" " + want) and last.count(LABEL_PREFIX.strip()) == 1


def is_valid_rationale(text: str | None, label: str) -> bool:
    """``ends_with_label`` and some reasoning before the label line."""
    if not ends_with_label(text, label):
        return False
    body = text.strip()[: -len(LABEL_PREFIX + label.strip())]
    return any(ch.isalnum() for ch in body)


def check_request(i: int, req: TeacherRequest) -> None:
    """``ValueError`` naming request ``i`` and the field when ``req`` cannot be explained."""
    if not isinstance(req, TeacherRequest):
        raise ValueError(f"request {i}: expected a TeacherRequest, got {type(req).__name__}")
    try:
        f = get_format(req.fmt)
    except KeyError as e:
        raise ValueError(f"request {i}: fmt: {e.args[0]}") from None
    label = req.label if isinstance(req.label, str) else ""
    if not label.strip() or "\n" in label:
        raise ValueError(f"request {i}: label must be a non-empty single line, got {req.label!r}")
    if any(not isinstance(c, str) or not c.strip() for c in req.candidates):
        raise ValueError(f"request {i}: candidates must be non-empty strings, "
                         f"got {req.candidates!r}")
    try:
        check_clip(req.joints, f, what="joints")
        resolve_parts(f)
    except ValueError as e:
        raise ValueError(f"request {i}: {e}") from None


def check_requests(requests: Sequence[TeacherRequest]) -> None:
    for i, req in enumerate(requests):
        check_request(i, req)


def motion_sentences(req: TeacherRequest) -> list[str]:
    """The kinematic account of ``req``'s clip (:mod:`posrft.skeleton.motion`), no label."""
    return describe(analyse_motion(req.joints, req.fmt))


SYSTEM_PROMPT = (
    "You explain human actions from measured skeleton motion. Write a short step-by-step "
    "rationale (2 to 5 sentences) that links the observed motion to the action, then finish with "
    "one final line exactly of the form 'Label: <action>'."
)


def build_messages(req: TeacherRequest) -> list[dict[str, str]]:
    """Chat messages (system + user) asking a language model for ``req``'s rationale."""
    obs = "\n".join(f"- {s}" for s in motion_sentences(req))
    parts = [f"Observed motion of the skeleton (directions in the person's own frame):\n{obs}"]
    if req.candidates:
        parts.append("Candidate actions: " + "; ".join(req.candidates) + ".")
    truth = req.label + (f" ({req.description.strip()})" if req.description.strip() else "")
    parts.append(f"The correct action is: {truth}.")
    parts.append(
        "Explain step by step which observations identify this action (and rule out the others), "
        "reasoning from the motion only; do not say that you were told the answer.\n"
        f"End with the line: {LABEL_PREFIX}{req.label}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "\n\n".join(parts)}]


def request_key(req: TeacherRequest, teacher_name: str) -> str:
    """SHA-256 of (joints as float64 bytes + shape, fmt, label, candidates, description,
    teacher name)."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(np.asarray(req.joints, dtype=np.float64))
    h.update(repr(arr.shape).encode())
    h.update(arr.tobytes())
    for s in (get_format(req.fmt).name, req.label, "\x1f".join(req.candidates), req.description,
              teacher_name):
        h.update(b"\x00" + s.encode())
    return h.hexdigest()


class TeacherBase:
    """Validation and statuses shared by all teachers. A subclass sets ``name`` and implements
    ``_run(requests, emit)``, calling ``emit(i, raw_text)`` or ``emit(i, None, error)`` once per
    request as soon as it has it (so callers can cache results before a later one fails)."""

    name: str = "teacher"

    def rationales(self, requests: Sequence[TeacherRequest],
                   on_result: OnResult | None = None) -> list[str | None]:
        requests = list(requests)
        check_requests(requests)
        out: list[str | None] = [None] * len(requests)

        def emit(i: int, raw: str | None, error: str | None = None) -> None:
            if raw is None:
                res = TeacherResult(None, "failed", None, error or "no output")
            elif is_valid_rationale(raw, requests[i].label):
                res = TeacherResult(raw.strip(), "ok", raw)
            else:
                want = LABEL_PREFIX + requests[i].label
                res = TeacherResult(None, "invalid", raw, f"does not end with the line '{want}'")
            out[i] = res.text
            if on_result is not None:
                on_result(i, res)

        if requests:
            self._run(requests, emit)
        return out

    def _run(self, requests: list[TeacherRequest], emit) -> None:  # pragma: no cover
        raise NotImplementedError
