"""The offline, deterministic teacher: a rationale computed from the joint trajectories.

The text is :func:`posrft.skeleton.motion.describe` (2-5 sentences: which parts move, when, in
which direction of the body's own frame, periodic or once, ranges in cm / degrees, largest
motion first) followed by the line ``Label: <label>``. Its ``name`` carries a digest of this
module's and :mod:`~posrft.skeleton.motion`'s source, so a cache of its rationales goes stale
(and is recomputed) whenever the wording or the analysis changes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from posrft.skeleton import motion
from posrft.skeleton.teacher_base import LABEL_PREFIX, TeacherBase, TeacherRequest


def _source_digest() -> str:
    h = hashlib.sha256()
    for mod_file in (Path(motion.__file__), Path(__file__)):
        h.update(mod_file.read_bytes())
    return h.hexdigest()[:10]


class KinematicTeacher(TeacherBase):
    """``KinematicTeacher().rationales(requests)``: never invalid, never fails (bad input raises
    ``ValueError`` naming the request before anything is computed)."""

    def __init__(self, max_observations: int = motion.MAX_OBSERVATIONS) -> None:
        if not 1 <= max_observations <= 4:
            raise ValueError(f"max_observations must be in 1..4 (at most 5 sentences), "
                             f"got {max_observations}")
        self.max_observations = max_observations
        self.name = f"kinematic@{_source_digest()}-k{max_observations}"

    def explain(self, req: TeacherRequest) -> str:
        """The rationale of one (already checked) request."""
        summary = motion.analyse_motion(req.joints, req.fmt)
        sentences = motion.describe(summary, self.max_observations)
        return " ".join(sentences) + "\n" + LABEL_PREFIX + req.label.strip()

    def _run(self, requests: list[TeacherRequest], emit) -> None:
        for i, req in enumerate(requests):
            emit(i, self.explain(req))
