"""Runtime options, read from one path: model-settings.json `parameters.extra`, then `CASSAVA_*` env vars.

An environment variable wins over the file so that a container or a Kubernetes manifest can change a
limit without rebuilding the model folder. Everything else falls back to the defaults below, which
are the documented limits (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Backend = Literal["tensorflow", "onnx"]

MiB = 1024 * 1024


class CassavaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASSAVA_", extra="forbid", protected_namespaces=())

    model_dir: Path | None = Field(
        default=None,
        description="Model directory. Unset: the model's `uri` in model-settings.json, then the cache.",
    )
    backend: Backend = Field(default="tensorflow", description="Inference backend.")
    max_batch_size: int = Field(default=64, ge=1, description="Most images in one request.")
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="Most pixels (width x height) in one encoded image."
    )
    max_image_bytes: int = Field(default=20 * MiB, ge=1, description="Largest encoded image, in bytes.")
    inference_threads: int = Field(
        default=0, ge=0, description="Threads the backend uses for one inference; 0 = its default."
    )
    shutdown_grace_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="After SIGTERM, how long in-flight requests may take before they are cut off "
        "(`cassava.launcher`). Keep it below the pod's terminationGracePeriodSeconds (default 30).",
    )
    fast_decode: bool = Field(
        default=False,
        description="Decode large JPEGs at 1/2-1/8 scale (libjpeg DCT scaling): faster, but approximate "
        "pixels; see docs/performance.md for its measured agreement with the exact path.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env before init: init carries model-settings.json `parameters.extra`.
        return (env_settings, init_settings)

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> CassavaSettings:
        return cls(**(extra or {}))
