"""Importing this module registers every built-in reward (see :mod:`rewards.registry`)."""

from rewards import format  # noqa: F401
