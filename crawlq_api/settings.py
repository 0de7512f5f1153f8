"""The HTTP API's own settings, read from `CRAWLQ_API_*` environment variables and `.env`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from crawlq.addresses import parse_networks

__all__ = ["ApiSettings", "MAX_WAIT_S"]

MAX_WAIT_S = 30.0  #: the most `wait_s` a submit may ask for


class ApiSettings(BaseSettings):
    """`crawlq serve` settings. Every field `foo` is read from `CRAWLQ_API_FOO`."""

    model_config = SettingsConfigDict(env_prefix="CRAWLQ_API_", env_file=".env", extra="ignore")

    token: SecretStr | None = None  #: bearer token for every endpoint but `public_paths` (required to serve)
    read_token: SecretStr | None = None  #: optional token that may only GET (dashboards)
    public_paths: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["/healthz", "/readyz", "/metrics"])
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)  #: CIDRs submits may target
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)  #: request bodies above this get 413
    read_deadline_s: float = Field(default=3.0, gt=0)  #: deadline of the concurrent reads behind one answer
    resolve_timeout_s: float = Field(default=2.0, gt=0)  #: deadline for resolving a submit's host names
    max_wait_s: float = Field(default=MAX_WAIT_S, ge=0, le=MAX_WAIT_S)  #: cap on a submit's `wait_s`
    wait_results_max: int = Field(default=10_000, ge=0)  #: results returned inline by a submit with `wait_s`
    follow_poll_s: float = Field(default=0.5, gt=0)  #: how often a followed result stream looks for new results
    follow_max_s: float = Field(default=3600.0, gt=0)  #: a followed result stream ends after this

    @field_validator("public_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        return parse_networks(value)
