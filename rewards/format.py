"""R_format ∈ {0, 1}: does the response follow the answer template?"""

from __future__ import annotations

import re
from typing import Any, Sequence

from posrft.eval.answer_format import ANSWER_TEMPLATE as DEFAULT_TEMPLATE
from rewards.api import completion_text
from rewards.registry import register_reward


@register_reward("format", target="text")
def format_reward(
    completions: Sequence[Any], template: str = DEFAULT_TEMPLATE, **kwargs: Any
) -> list[float]:
    """1.0 where the completion text fully matches the regex ``template`` (DOTALL), else 0.0."""
    pattern = re.compile(template, re.DOTALL)
    return [1.0 if pattern.match(completion_text(c).strip()) else 0.0 for c in completions]
