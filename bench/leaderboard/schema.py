"""The ``submission.yaml`` schema (``schema_version`` 1), documented in docs/leaderboard.md.

A submission folder holds ``submission.yaml`` and one predictions file per protocol, in the
format ``sida-bench score`` reads (``sample_id``, ``prob_<class>``, optional ``dataset``,
``split``, ``perturbation``, ``mask_path``, ``text``). Example::

    schema_version: 1
    method: {name: MyDetector, version: "1.0", authors: [A. Author], paper: https://..., code: https://...}
    weights_sha256: 3f2a...        # 64 hex digits, or "closed"
    training_data: SID-Set train split
    used_test_data: false
    predictions:
      - {protocol: sid_mini_detection, version: 1, file: detection.csv}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SUBMISSION_SCHEMA_VERSION = 1
MANIFEST = "submission.yaml"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LINK = re.compile(r"^https?://[^\s<>\"']+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(_Strict):
    """Who made the method and where to read about it (at least one of ``paper`` / ``code``)."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[\w .+:()/-]+$")
    version: str = Field(min_length=1, max_length=40, pattern=r"^[\w.+-]+$")
    authors: list[str] = Field(min_length=1, max_length=50)
    paper: str | None = None
    code: str | None = None

    @field_validator("paper", "code")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        if value is not None and not LINK.match(value):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_link(self) -> "Method":
        if self.paper is None and self.code is None:
            raise ValueError("give a paper or a code link")
        return self


class ProtocolPredictions(_Strict):
    """One protocol (bundled name and the version it was predicted for) and its predictions file
    (a path relative to the submission folder)."""

    protocol: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    file: str = Field(min_length=1, max_length=255)


class Submission(_Strict):
    """A validated ``submission.yaml``."""

    schema_version: Literal[1]
    method: Method
    weights_sha256: str
    training_data: str = Field(min_length=1, max_length=500)
    used_test_data: bool
    predictions: list[ProtocolPredictions] = Field(min_length=1)

    @field_validator("weights_sha256")
    @classmethod
    def _weights(cls, value: str) -> str:
        if value != "closed" and not SHA256.match(value):
            raise ValueError("must be 64 lowercase hex digits (sha256 of the weights file) or 'closed'")
        return value

    @field_validator("predictions")
    @classmethod
    def _unique(cls, value: list[ProtocolPredictions]) -> list[ProtocolPredictions]:
        names = [p.protocol for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"protocol listed twice: {', '.join(dupes)}")
        return value
