"""Process-wide locations and environment variables (floor 1: imports nothing from posrft).

Environment variables
---------------------
``POSRFT_CACHE``
    Folder for generated artefacts that are cheap to rebuild (the stand-in body model, JIT
    caches). Default: ``~/.cache/posrft``.
``POSRFT_BODY_MODELS``
    Folder holding the user's licensed body-model files (``SMPL_NEUTRAL.pkl``,
    ``SMPLH_MALE.pkl``, ``SMPLX_NEUTRAL.npz`` ... laid out as smplx expects, either directly or
    in ``smpl/``, ``smplh/``, ``smplx/`` sub-folders). A recipe field overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "POSRFT_CACHE"
BODY_MODELS_ENV = "POSRFT_BODY_MODELS"


def cache_dir() -> Path:
    """Return (and create) the posrft cache folder: ``$POSRFT_CACHE`` or ``~/.cache/posrft``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "posrft").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def body_models_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """Resolve the user's body-model folder.

    Order: the ``explicit`` argument (a recipe field), then ``$POSRFT_BODY_MODELS``. Returns
    ``None`` when neither is set, meaning "use the offline stand-in". A path that is set but
    does not exist raises ``FileNotFoundError`` naming where it came from.
    """
    source = "argument 'model_dir'"
    value = explicit
    if value is None:
        value, source = os.environ.get(BODY_MODELS_ENV), f"environment variable {BODY_MODELS_ENV}"
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"body-model folder {str(path)!r} (from {source}) does not exist")
    return path
