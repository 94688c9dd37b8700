"""Process settings, read once from the environment (`GATEWAY_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/gateway.db"
# The admin key `make run` uses when GATEWAY_ADMIN_KEY is not set (documented; a laptop only).
DEV_ADMIN_KEY = "dev-admin-key"


class Settings(BaseSettings):
    """Everything the process needs that is not in `gateway.yaml`."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    config: Path = Path("gateway.yaml")
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 4000
    log_level: str = "info"
    # How long an authenticated key stays cached in a replica; a revocation made on
    # another replica (or by the CLI) is seen after at most this long.
    key_cache_ttl_s: float = 2.0
    db_pool_size: int = 10
    audit_batch_size: int = 500
    # The shipper moves the spool into SQL this often (sooner once a batch is full). Each
    # round has a fixed cost on the process's core; at 50 ms, rounds overlapped a sixth of a
    # 1-client load's time (issue 21): at 250 ms, half that, and events show up within 0.25 s.
    audit_flush_interval_ms: int = 250
    audit_hmac_key: SecretStr | None = None
    # Key of the PII `hash` action (HMAC-SHA256). Set it (the same on every replica) for
    # stable hashes; when unset a key is derived from GATEWAY_AUDIT_HMAC_KEY or
    # GATEWAY_ADMIN_KEY, else a random one per process.
    pii_hash_key: SecretStr | None = None
    # The audit spool fsyncs each group commit (off: written, not synced; survives a crash
    # of the process but not of the machine). Bodies are kept up to this many characters.
    audit_spool_fsync: bool = True
    audit_body_max_chars: int = 65536
    # Processes `gateway serve` runs on its port (`--workers`); each is a replica with its
    # own audit spool and chain. `worker` is the index the supervisor gives each one.
    workers: int = 1
    worker: int = 0
    # Names this replica's audit hash chain (`<replica_id>-<6 hex>`); default: the host name.
    replica_id: str | None = None
    # Put prompt and answer text on trace spans (gen_ai.input/output.messages): off by default.
    trace_content: bool = False
    # Load the tokenizers and litellm the configured models need at start, not on the first
    # request that needs them (see gateway/preload.py). Off: a faster start, for tests.
    preload: bool = True
    # Where the gateway looks for litellm's offline data (price map, tokenizer files);
    # found automatically next to the installed litellm package when unset.
    litellm_data_dir: Path | None = None
