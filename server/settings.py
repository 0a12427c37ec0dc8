"""One settings class for the gateway, fed by CLI flags > `LORAFLEET_*` env > YAML file > defaults.

Helm values become environment variables (see helm/lorafleet), so this class is the only place a
setting is defined. It is validated once at start-up: a bad value stops the process with a clear
message instead of failing on the first request.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from lorafleet.adapters.base_models import DEFAULT_MODEL_ID, default_cache_dir
from lorafleet.server.protocol import MAX_TOKENS
from lorafleet.server.token_limits import DEFAULT_MAX_TOKENS

_URL = TypeAdapter(AnyHttpUrl)


def _split_list(value: Any, sep: str = ",") -> Any:
    """Env vars carry lists as `a,b,c`; YAML and flags carry real lists."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(sep) if item.strip()]
    return value


class AdapterDeclaration(BaseModel):
    """An adapter named in the serve config, registered (idempotently) at start-up."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    base_model: str | None = None


_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# The engine servers the gateway speaks to (server/engine/kinds.py).
EngineKind = Literal["vllm", "llama.cpp"]


def model_name_for(source: str) -> str:
    """The id a model is served under when none is given: a directory's or HF id's last part."""
    return source.rstrip("/").rsplit("/", 1)[-1] if "/" in source else source


class ModelSpec(BaseModel):
    """One base model behind the gateway: the id clients send, where its weights come from, its
    engines (cluster mode) and any engine setting that differs from the `engine_*` defaults.

    Local mode starts `replicas` engines on `source`; cluster mode serves the engines at
    `engine_urls` / `engine_discovery` and reads only `source`'s config.json (adapter checks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_MODEL_NAME)
    source: str | None = None  # default id, HF id or directory; defaults to `name`
    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    engine_discovery: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # What runs at engine_urls: vLLM, or llama.cpp's llama-server for a GGUF export
    # (server/engine/llamacpp_http.py; cluster mode only, and no adapters).
    engine_kind: EngineKind = "vllm"
    # Per-model overrides of the engine_* settings (None: the gateway-wide value).
    replicas: int | None = Field(None, ge=1, le=16)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    max_model_len: int | None = Field(None, ge=128)
    max_num_seqs: int | None = Field(None, ge=1)
    kv_cache_gib: float | None = Field(None, gt=0)
    max_loras: int | None = Field(None, ge=1)
    max_lora_rank: int | None = Field(None, ge=1, le=512)
    cpu_threads: str | None = None
    extra_args: list[str] | None = None
    base_guard: Literal["auto", "on", "off"] | None = None
    default_max_tokens: int | None = Field(None, ge=1)
    max_tokens_cap: int | None = Field(None, ge=1)

    @field_validator("engine_urls", "engine_discovery", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("engine_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        return _check_urls(urls)

    @field_validator("engine_discovery")
    @classmethod
    def _discovery(cls, names: list[str]) -> list[str]:
        return _check_discovery(names)

    @model_validator(mode="after")
    def _kind_needs_cluster_mode(self) -> Self:
        if self.engine_kind != "vllm" and not self.remote:
            raise ValueError(
                f"model {self.name}: engine_kind {self.engine_kind} needs engine_urls or "
                "engine_discovery (cluster mode): local mode starts vLLM engines only; start "
                "llama-server yourself (docs/label-and-export.md) and give its URL"
            )
        return self

    @property
    def weights(self) -> str:
        return self.source or self.name

    @property
    def remote(self) -> bool:
        """True when its engines run elsewhere (cluster mode)."""
        return bool(self.engine_urls or self.engine_discovery)


def _check_urls(urls: list[str]) -> list[str]:
    for url in urls:
        _URL.validate_python(url)
    return [url.rstrip("/") for url in urls]


def _check_discovery(names: list[str]) -> list[str]:
    for name in names:
        host, _, port = name.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"engine_discovery entries are host:port, got {name!r}")
    return names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORAFLEET_", extra="forbid", validate_default=True, frozen=True
    )

    # --- HTTP server -------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False

    # --- What is served ----------------------------------------------------------------------
    # Several base models, one engine pool each (YAML `models:` list, env LORAFLEET_MODELS as
    # JSON). Empty: the one model described by `model`, `served_model_name`, `engine_urls` and
    # `engine_discovery` below.
    models: list[ModelSpec] = Field(default_factory=list)
    # Local mode: the model to run (embedded default id, Hugging Face id, or local directory).
    model: str = DEFAULT_MODEL_ID
    # The id clients send as `model` for the base; defaults to `model` (its last path part).
    served_model_name: str | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)

    # --- Engines -----------------------------------------------------------------------------
    # Cluster mode: engines already running elsewhere; the gateway starts none.
    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Cluster mode on Kubernetes: `headless-service:port` names, resolved every
    # `discovery_interval_s` to one engine per pod IP (replicas come and go with the Deployment).
    engine_discovery: Annotated[list[str], NoDecode] = Field(default_factory=list)
    engine_kind: EngineKind = "vllm"  # vllm or llama.cpp (ModelSpec.engine_kind)
    discovery_interval_s: float = Field(10.0, gt=0)
    # Local mode: how many engine processes to supervise, and their settings.
    replicas: int = Field(1, ge=1, le=16)
    engine_host: str = "127.0.0.1"
    # Internal engine ports: None picks free ones; a number pins base, base + 1, ...
    engine_port_base: int | None = Field(None, ge=1024, le=65000)
    engine_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    engine_max_model_len: int = Field(2048, ge=128)
    engine_max_num_seqs: int = Field(64, ge=1)
    engine_kv_cache_gib: float = Field(4.0, gt=0)
    engine_enable_lora: bool = True
    engine_max_loras: int = Field(4, ge=1)
    engine_max_lora_rank: int = Field(16, ge=1, le=512)
    engine_cpu_threads: str | None = None  # OMP core binding, e.g. "0-1"; default: all cores
    engine_extra_args: Annotated[list[str], NoDecode] = Field(default_factory=list)
    engine_restart_backoff_s: float = Field(2.0, ge=0)

    # --- Adapters ----------------------------------------------------------------------------
    # Registry database: SQLite file by default, or postgresql://user@host/db for shared state.
    database_url: str | None = None
    # Local adapter sources must resolve (symlinks included) under one of these directories.
    adapter_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Content-addressed copies of registered adapters; engines load from here.
    adapter_store: Path | None = None
    adapters: list[AdapterDeclaration] = Field(default_factory=list)  # registered at start-up
    allow_hf_sources: bool = True
    s3_enabled: bool = False
    s3_endpoint_url: str | None = None
    # Route base requests through an all-zero adapter (lorafleet.adapters.guard): "auto" turns
    # it on for CPU engines with LoRA, whose kernels give base rows of mixed batches an adapter.
    base_guard: Literal["auto", "on", "off"] = "auto"
    max_adapters_per_engine: int = Field(32, ge=1)
    adapter_load_timeout_s: float = Field(120.0, gt=0)
    reconcile_interval_s: float = Field(10.0, gt=0)
    registry_poll_s: float = Field(1.0, gt=0)

    # --- Auth (on whenever admin_key is set) -------------------------------------------------
    admin_key: SecretStr | None = None
    key_secret: SecretStr | None = None  # HMAC secret for stored API key hashes
    # Auth off is for loopback; binding a wider `host` without auth must be asked for.
    allow_unauthenticated: bool = False

    # --- Upstream timeouts -------------------------------------------------------------------
    connect_timeout_s: float = Field(5.0, gt=0)
    first_byte_timeout_s: float = Field(300.0, gt=0)  # queueing + prefill on a busy engine
    inter_token_timeout_s: float = Field(120.0, gt=0)
    # aiohttp relays several times more events per CPU second than httpx (see
    # docs/design/gateway-performance.md); httpx stays for tests and as a fallback.
    engine_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    health_interval_s: float = Field(5.0, gt=0)
    retry_attempts: int = Field(3, ge=1, le=10)  # before the first byte only
    retry_max_wait_s: float = Field(2.0, ge=0)

    # --- Limits ------------------------------------------------------------------------------
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Requests in flight per base model before new ones get 429 (a bounded queue).
    max_in_flight_per_model: int = Field(512, ge=1)
    # Generated tokens for a request that names no max_tokens (so none runs to the end of the
    # context), and a cap above which requests get 400 (None: only the protocol's 32768).
    default_max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS)
    max_tokens_cap: int | None = Field(None, ge=1, le=MAX_TOKENS)
    usage_flush_interval_s: float = Field(5.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    # Per-key rpm/tpm buckets and budgets shared by every gateway replica (redis://host:port/db,
    # rediss:// for TLS). Unset: each process enforces the limits on the traffic it sees.
    redis_url: str | None = None
    # Prefix of the limiter's Redis keys, so several deployments can share one Redis.
    redis_key_prefix: str = Field("lorafleet", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    # --- Metrics -----------------------------------------------------------------------------
    # Adapters with their own `model` label on /metrics (first come, first served); any further
    # adapter is reported as model="_other-adapters" (its numbers stay in GET /v1/usage).
    metrics_max_adapter_labels: int = Field(100, ge=0, le=10_000)
    # OpenTelemetry traces of requests (server/tracing.py) to this OTLP/HTTP collector, e.g.
    # http://otel-collector:4318; unset: tracing is off and costs nothing.
    otlp_endpoint: str | None = None
    # The engines' own spans (vLLM --otlp-traces-endpoint): they join the gateway's traces,
    # since every engine request carries a traceparent. Unset: the engines trace nothing.
    engine_otlp_traces_endpoint: str | None = None

    @field_validator("adapter_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return _split_list(value, os.pathsep)

    @field_validator("engine_urls", "engine_discovery", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("engine_discovery")
    @classmethod
    def _check_discovery(cls, names: list[str]) -> list[str]:
        return _check_discovery(names)

    @field_validator("engine_extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    @field_validator("engine_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        return _check_urls(urls)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, url: Any) -> Any:
        if url == "":
            return None  # an empty env var or Helm value means "not shared"
        if isinstance(url, str) and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return url

    @model_validator(mode="after")
    def _check_max_tokens(self) -> Self:
        if self.max_tokens_cap is not None and self.default_max_tokens > self.max_tokens_cap:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) is above max_tokens_cap "
                f"({self.max_tokens_cap})"
            )
        return self

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.admin_key is not None:
            if len(self.admin_key.get_secret_value()) < 16:
                raise ValueError("admin_key must be at least 16 characters")
            if self.key_secret is None or len(self.key_secret.get_secret_value()) < 32:
                raise ValueError(
                    "auth is on (admin_key is set): key_secret must be set too, at least 32 "
                    "random characters (it keys the HMAC of stored API keys)"
                )
        elif not self.allow_unauthenticated and not _is_loopback(self.host):
            raise ValueError(
                f"host {self.host} is reachable beyond this machine and auth is off: set "
                "LORAFLEET_ADMIN_KEY and LORAFLEET_KEY_SECRET, or "
                "LORAFLEET_ALLOW_UNAUTHENTICATED=1 to serve every caller as the admin"
            )
        return self

    @model_validator(mode="after")
    def _check_models(self) -> Self:
        if self.models:
            # Set to anything but its default, however it was given (a dump sets every field).
            fields = type(self).model_fields
            mixed = {
                name
                for name in ("served_model_name", "engine_urls", "engine_discovery", "engine_kind")
                if name in self.model_fields_set
                and getattr(self, name)
                and getattr(self, name) != fields[name].get_default(call_default_factory=True)
            }
            if mixed:
                raise ValueError(
                    f"models is set: give {', '.join(sorted(mixed))} per model "
                    "(models[].engine_urls, models[].engine_discovery, models[].name)"
                )
            names = [spec.name for spec in self.models]
            if len(set(names)) != len(names):
                raise ValueError(f"models: every name must be unique, got {names}")
            if len({spec.remote for spec in self.models}) > 1:
                raise ValueError(
                    "models: either every model has engine_urls/engine_discovery (cluster "
                    "mode) or none has (local mode: the gateway starts the engines)"
                )
        elif not self.local_mode and not self.served_model_name:
            raise ValueError(
                "engine_urls or engine_discovery (cluster mode) needs served_model_name: the "
                "base model id the engines serve (vLLM --served-model-name)"
            )
        return self

    @property
    def registry_url(self) -> str:
        return self.database_url or f"sqlite:///{self.cache_dir / 'registry.db'}"

    @property
    def store_dir(self) -> Path:
        return self.adapter_store or self.cache_dir / "adapter-store"

    @property
    def served_models(self) -> list[ModelSpec]:
        """Every base model, one pool each: `models`, or the single model the flat fields name."""
        if self.models:
            return list(self.models)
        return [
            ModelSpec(
                name=self.base_model_id,
                source=self.model,
                engine_urls=self.engine_urls,
                engine_discovery=self.engine_discovery,
                engine_kind=self.engine_kind,
            )
        ]

    @property
    def local_mode(self) -> bool:
        """True when this process starts and supervises its own engines."""
        return not any(spec.remote for spec in self.served_models)

    @property
    def base_model_id(self) -> str:
        """The first base model's id (the only one unless `models` lists several)."""
        if self.models:
            return self.models[0].name
        return self.served_model_name or model_name_for(self.model)

    def max_lora_rank_for(self, spec: ModelSpec) -> int:
        return spec.max_lora_rank or self.engine_max_lora_rank

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file comes from --config (see load_settings) or LORAFLEET_CONFIG (Helm).
        yaml_file = settings_cls.model_config.get("yaml_file") or os.environ.get("LORAFLEET_CONFIG")
        yaml = YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)
        return (init_settings, env_settings, yaml)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from flags (`overrides`, None meaning unset), env, a YAML file, defaults."""
    flags = {key: value for key, value in overrides.items() if value is not None}
    if config_file is None:
        return Settings(**flags)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return _FromFile(**flags)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
