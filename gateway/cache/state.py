"""What the cache decided for one request (`RequestContext.cache`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config import CacheRules

Status = Literal["HIT", "MISS", "BYPASS", "REFRESH"]
STATUS_HEADER = "x-gateway-cache"


@dataclass(slots=True)
class CacheState:
    rules: CacheRules
    status: Status = "BYPASS"
    key: str | None = None
    store: bool = False  # a fresh answer may be written (not `no-store`, cacheable)
    pending: bytes | None = None  # the answer to write, once the output rules passed it

    @property
    def hit(self) -> bool:
        return self.status == "HIT"

    @property
    def tokens_free(self) -> bool:
        """A hit's tokens do not count against tpm (unless the route says they do)."""
        return self.status == "HIT" and not self.rules.hits_use_tpm
