"""The answer template shared by the format reward and the evaluation (no heavy imports)."""

from __future__ import annotations

import re

#: Some text, exactly one ``<POSE>``, no other angle-bracket special token.
ANSWER_TEMPLATE = r"^[^<>]*<POSE>[^<>]*$"


def format_ok(text: str, template: str = ANSWER_TEMPLATE) -> bool:
    """Whether ``text`` (stripped) fully matches ``template`` (regex, DOTALL)."""
    return re.match(template, text.strip(), re.DOTALL) is not None
