"""The one settings class of hpscale. Every field can be set by an ``HPSCALE_`` variable."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where hpscale keeps its files: ``$XDG_DATA_HOME/hpscale`` or ``~/.local/share/hpscale``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hpscale"


class Settings(BaseSettings):
    """hpscale's settings (environment prefix ``HPSCALE_``)."""

    model_config = SettingsConfigDict(env_prefix="HPSCALE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Folder for the database and caches.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file hpscale.db in data_dir."
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Key for API writes; no key (unset, empty or only whitespace): writes refused. Surrounding "
        "whitespace is dropped, as HTTP drops it from the X-API-Key header.",
    )
    # Bounded work per request (the API refuses more with 413 or a 422 naming the field; the
    # OpenAPI document states the values in force). Measured costs: BENCHMARKS.md.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Largest accepted request body, bytes.")
    max_runs_per_request: int = Field(default=10_000, ge=1, description="Most runs one POST /runs may carry.")
    max_curve_points: int = Field(
        default=100_000, ge=2, description="Most curve points one POST /runs may carry (all runs together), and the "
        "longest schedule (steps) POST /predict/curve evaluates.",
    )
    max_fit_bootstrap: int = Field(
        default=2_000, ge=0, le=10_000, description="Most bootstrap resamples one POST /fits may ask for."
    )
    max_concurrent_fits: int = Field(
        default=1, ge=1, description="Fits the API runs at once (in worker threads, off the event loop); more wait."
    )
    load_demo: bool = Field(default=True, description="Load the demo sweep into an empty database on serve.")
    extrapolation_warning: float = Field(
        default=10.0, description="Warn when a target lies more than this factor outside a law's data."
    )
    max_curve_steps: int = Field(
        default=2_000_000, ge=1,
        description="Longest learning-rate schedule, in steps, that a loss-curve prediction or an imported run may carry.",
    )

    @field_validator("api_key", mode="after")
    @classmethod
    def _key_or_none(cls, value: SecretStr | None) -> SecretStr | None:
        # HTTP servers strip a header value's surrounding whitespace, so a key that has some
        # could never match: keep its core, and a key of whitespace alone is no key at all.
        if value is None:
            return None
        key = value.get_secret_value().strip()
        return SecretStr(key) if key else None

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force (the SQLite default when none is set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hpscale.db').expanduser()}"


@lru_cache
def get_settings() -> Settings:
    """Settings read once from the environment."""
    return Settings()
