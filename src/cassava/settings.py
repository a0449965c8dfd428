"""Runtime options, read from one path: model-settings.json `parameters.extra`, then `CASSAVA_*` env vars.

An environment variable wins over the file so that a container or a Kubernetes manifest can change a
limit without rebuilding the model folder. Everything else falls back to the defaults below, which
are the documented limits (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from cassava.preprocessing import Limits

Backend = Literal["tensorflow", "onnx"]
#: How the server trades single-request latency against throughput (`cassava.server.config.PROFILES`).
Profile = Literal["latency", "throughput"]

MiB = 1024 * 1024


class CassavaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASSAVA_", extra="forbid", protected_namespaces=())

    model_dir: Path | None = Field(
        default=None,
        description="Model directory. Unset: the model's `uri` in model-settings.json, then the cache.",
    )
    backend: Backend = Field(default="tensorflow", description="Inference backend.")
    profile: Profile = Field(
        default="latency",
        description="Serving profile: latency (inference in the server process, no batching: the "
        "fastest single request) or throughput (requests arriving together merged into one model call: "
        "more images/s under concurrent load, a wait for a lone request). See docs/performance.md. Set "
        "as CASSAVA_PROFILE it overrides the worker and batching values of settings.json and "
        "model-settings.json (`cassava.server.launcher`).",
    )
    # Not `max_batch_size`: in model-settings.json that name is MLServer's adaptive batching (requests
    # merged into one call).
    max_images: int = Field(default=64, ge=1, description="Most images in one request.")
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
        "(`cassava.server.launcher`). Keep it below the pod's terminationGracePeriodSeconds (default 30).",
    )
    # --- the server's defences against hostile clients (`cassava.server.rest`, `.app`; docs/reliability.md)
    # Server-wide: the launcher takes them from the first cassava model (or CASSAVA_* variables).
    lame_duck_seconds: float = Field(
        default=3.0,
        ge=0,
        le=600,
        description="After SIGTERM, how long the server keeps answering (reporting not-ready, every REST "
        "response with `Connection: close`) before it closes its listeners and drains; covers platforms "
        "that stop routing to a pod only after sending it SIGTERM.",
    )
    repository_api: bool = Field(
        default=False,
        description="Serve the model repository API (`/v2/repository/...` load/unload/index, REST and "
        "gRPC). Internal: only Seldon Core 2's agent needs it; anyone who can reach the port can then "
        "unload the model.",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve MLServer's Swagger pages (`/v2/docs`, `/v2/models/{name}/docs`), which load "
        "their scripts from a CDN. The OpenAPI documents (`.../docs/dataplane.json`) are always served.",
    )
    max_request_id_chars: int = Field(
        default=256,
        ge=1,
        le=8192,
        description="Longest request `id` (printable ASCII only): it is copied into response headers.",
    )
    max_json_keys: int = Field(
        default=1000,
        ge=10,
        description="Most keys in a REST JSON body (counted, before parsing, as its ':' characters, an "
        "upper bound): bounds `parameters` objects before they are parsed.",
    )
    max_parameters: int = Field(
        default=64,
        ge=1,
        description="Most entries in one `parameters` object of a request, its inputs or outputs.",
    )
    max_parameters_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Most bytes in all `parameters` of a request together (serialised).",
    )
    max_request_headers: int = Field(
        default=100, ge=1, description="Most HTTP request headers (REST); more gets 431."
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Most bytes of HTTP request headers (REST); more gets 431, or a closed connection "
        "while they arrive.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a REST connection may take to deliver a request's headers before it is closed.",
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a REST request may take to deliver its whole body before it gets 408.",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, description="How long an idle REST keep-alive connection stays open."
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Most concurrent REST connections; a request over the cap gets 503 with Retry-After.",
    )
    web_ui: bool = Field(
        default=True,
        description="Serve the diagnosis page at `/` of the REST port (CASSAVA_WEB_UI=false turns it off).",
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

    def limits(self, merged_requests: int = 1) -> Limits:
        """The decoder's limits. `merged_requests`: how many requests MLServer's adaptive batcher may
        merge into one call, whose images the per-request limit can then only bound together."""
        from cassava.preprocessing import Limits

        return Limits(
            self.max_images * max(1, merged_requests),
            self.max_image_pixels,
            self.max_image_bytes,
            fast_decode=self.fast_decode,
        )

    def with_flags(self, **flags: Any) -> CassavaSettings:
        """These settings with the command-line options that were given (not None) on top: on the
        command line a flag beats CASSAVA_* variables, which beat the defaults."""
        given = {k: v for k, v in flags.items() if v is not None}
        return self.model_copy(update=given) if given else self

    def as_env(self) -> dict[str, str]:
        """The settings as CASSAVA_* variables, for a child process (a server `cassava serve` starts)
        to build exactly these settings."""
        return self.env_for(self.model_dump())

    @classmethod
    def env_for(cls, values: dict[str, Any]) -> dict[str, str]:
        """`values` (field name -> value) as the CASSAVA_* variables that set them."""
        prefix = str(cls.model_config.get("env_prefix", ""))
        return {
            f"{prefix}{name}".upper(): str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in values.items()
            if value is not None
        }

    def model_directory(self, explicit: Path | str | None = None) -> Path:
        """The model directory: `explicit` (a `--model` option), else `model_dir` (CASSAVA_MODEL_DIR),
        else the cache. What every command and the runtime resolve."""
        from cassava.model_store import resolve_model_dir

        return resolve_model_dir(explicit or self.model_dir)
