"""Where the texts of an Anthropic Messages body are, for the one walker (`fields.py`).

Every string is text unless listed here (the walker's rule). Listed as not text: ids, names
and enums; base64 payloads of images and documents (`source.data`; a plain-text document's
data is the one text this leaves unscanned, as it cannot be told from base64 by path); and
the signed parts of thinking (`thinking`, `signature`, `redacted_thinking.data`): Anthropic
checks the signature over the thinking text, so the policy's rules never touch it, in a
request or an answer. What is stored (audit bodies, traces) is another matter: the stored
view (`STORED`) scans thinking too, since nothing stored goes back to Anthropic.
"""

from __future__ import annotations

_BLOCK_NOT_TEXT = ("type", "id", "name", "tool_use_id", "cache_control", "source.type",
                   "source.media_type", "source.file_id", "citations[].type")
SIGNED = ("messages[].content[].thinking", "messages[].content[].signature",
          "messages[].content[].data")
NOT_TEXT = (
    "model", "messages[].role", "tool_choice", "thinking", "service_tier",
    *(f"messages[].content[].{p}" for p in _BLOCK_NOT_TEXT),
    *(f"messages[].content[].content[].{p}" for p in ("type", "cache_control", "source.type",
                                                       "source.media_type")),
    "system[].type", "system[].cache_control",
    "tools[].name", "tools[].type", "tools[].cache_control",
)
BINARY = ("messages[].content[].source.data", "messages[].content[].content[].source.data")
URLS = ("messages[].content[].source.url", "messages[].content[].content[].source.url")

RESPONSE_SIGNED = ("content[].thinking", "content[].signature", "content[].data")
RESPONSE_NOT_TEXT = ("id", "type", "role", "model", "stop_reason", "usage", "container",
                     "content[].type", "content[].id", "content[].name",
                     "content[].citations[].type")
