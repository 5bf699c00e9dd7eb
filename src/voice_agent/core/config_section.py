"""The base of every configuration section (core/config.py puts them together)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # Nested sections refuse unknown keys too, so a typo like ``[stt] modle`` is an error.
    model_config = ConfigDict(extra="forbid")
