"""JSON-lines logging on stdout. Records carry no request bodies, keys or secrets."""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Record attributes that are not extra fields (uvicorn's `color_message` repeats `msg` with
# terminal colour codes; litellm's filters stamp `litellm_redacted` on other libraries' records).
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "color_message", "litellm_redacted"}
# litellm's records carry upstream error text (which can echo a key) and request data: none
# is written. The gateway logs what happened to each request itself.
_SILENCED = ("LiteLLM", "litellm")


def _not_silenced(record: logging.LogRecord) -> bool:
    return not record.name.startswith(_SILENCED)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and message only: a stack may hold request data.
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"[:500]
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_not_silenced)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "aiosqlite",
                  "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
