"""Which body keys and header names a client may not send: by what a name means, not a list.

A name is cut into words whatever its spelling (`api_base`, `apiBase`, `API-BASE`, `baseURL`,
`x-api-key`, `X_ApiKey` all give the same words) and refused when a word names

- a destination: `base`, `endpoint`, `host`, `proxy`, `upstream`, `deployment`, a URL that is
  not content (`base_url`, `server_url`, `webhook_url`; a bare `url` and `image_url`-style
  media URLs are content), or a cloud account (`aws_*`, `azure_*`, `vertex_*`, `bedrock_*`);
- a credential: `api`, `secret`, `password`, `credential`, `auth…`, `bearer`, `cookie`,
  `header(s)`, `ssl`/`tls`/`cert`, or `key`/`token` as a credential noun (a bare `key` or
  `token`, `x_api_key`, `access_token`, `session_token`, `private_key`: not
  `prompt_cache_key`, `max_tokens` or `stop_token_ids`);
- the machinery of an LLM library: `litellm`, `llm` (`custom_llm_provider`), `mock_*`,
  `callback(s)`, `fallback(s)` (not the yes/no `allow_fallbacks`), `retries`, `logger`.
  None of these is an OpenAI parameter, and an OpenAI-compatible upstream may itself be a
  litellm proxy that honours them.

Every OpenAI request parameter passes (`prompt_cache_key`, `safety_identifier`, `service_tier`,
`store`, `metadata`, `user`, …), and so do the usual extras of OpenAI-compatible servers
(`top_k`, `min_p`, `stop_token_ids`, `guided_json`, `chat_template_kwargs`, OpenRouter's
`provider`). `tests/api/test_security_requests.py` holds the table of both sides.
"""

from __future__ import annotations

import functools
import re

# camelCase and acronyms: "baseURL" -> base, URL; "XApiKey" -> X, Api, Key; "APIKey" -> API, Key
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

_DESTINATION = frozenset({
    "base", "baseurl", "endpoint", "endpoints", "host", "hosts", "hostname", "proxy", "proxies",
    "upstream", "deployment", "aws", "azure", "vertex", "vertexai", "bedrock", "sagemaker",
    "gcp", "watsonx",
})
_CREDENTIAL = frozenset({
    "api", "apikey", "secret", "secrets", "password", "passwd", "passphrase", "credential",
    "credentials", "auth", "oauth", "authorization", "authentication", "bearer", "cookie",
    "cookies", "header", "headers", "ssl", "tls", "cert", "certificate", "certfile", "keyfile",
})
_MACHINERY = frozenset({"litellm", "llm", "mock", "callback", "callbacks", "retries", "logger"})
# Which models to try next: machinery, unless it is a yes/no permission (OpenRouter's
# `provider.allow_fallbacks`), which chooses nothing.
_FALLBACK = frozenset({"fallback", "fallbacks"})
# `key` and `token` are credentials when bare or after one of these words.
_CREDENTIAL_QUALIFIERS = frozenset({
    "x", "access", "auth", "bearer", "session", "id", "refresh", "ad", "sas", "private",
    "secret", "subscription", "client", "service", "account", "master", "signing", "security",
})
# A URL is content (an image to look at, a page cited) when bare or after one of these.
_CONTENT_URL_QUALIFIERS = frozenset({
    "image", "video", "audio", "file", "document", "citation",
})
# Run-together spellings, anywhere in the lower-cased name ("apikey", "XAPIKEY", "baseurl").
_FUSED = ("apikey", "apibase", "apiurl", "apiversion", "baseurl", "accesskey", "accesstoken",
          "secretkey", "authtoken", "endpoint", "hostname", "password", "credential",
          "litellm", "callback")
_ALWAYS = _DESTINATION | _CREDENTIAL | _MACHINERY
_CREDENTIAL_NOUNS = frozenset({"key", "token"})
_URL_WORDS = frozenset({"url", "uri", "urls"})
_REMEMBERED_CHARS = 64


def _alternatives(found: frozenset[str] | tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(sorted(map(re.escape, found), key=len, reverse=True)))


_ANY_FUSED = _alternatives(_FUSED)
# Every rule needs one of these inside `name.lower()`: a name with none (most names) is
# allowed after one regex pass, without being cut into words (2-3x cheaper per new name).
_ANY_TRIGGER = _alternatives(_ALWAYS | _FALLBACK | _CREDENTIAL_NOUNS | _URL_WORDS
                             | frozenset(_FUSED))


def words(name: str) -> list[str]:
    """The lower-case words of a name, whatever its spelling."""
    return " ".join(_WORD.findall(name)).lower().split()


def forbidden(name: str) -> bool:
    """True when `name` names a destination, a credential or an LLM library's machinery."""
    # The same few names come in every request (`role`, `content`, …): short ones are
    # remembered; long ones are not, so a client cannot fill the memory with its own keys.
    return _remembered(name) if len(name) <= _REMEMBERED_CHARS else _forbidden(name)


def _forbidden(name: str) -> bool:
    low = name.lower()
    if _ANY_TRIGGER.search(low) is None:
        return False
    if _ANY_FUSED.search(low) is not None:
        return True
    parts = words(name)
    if not _ALWAYS.isdisjoint(parts):
        return True
    for i, word in enumerate(parts):
        if word in _FALLBACK and not (i and parts[i - 1] == "allow"):
            return True
        if word in _CREDENTIAL_NOUNS and (
                len(parts) == 1 or (i and parts[i - 1] in _CREDENTIAL_QUALIFIERS)):
            return True
        if word in _URL_WORDS and len(parts) > 1 and not (
                set(parts) - {word} <= _CONTENT_URL_QUALIFIERS):
            return True
    return False


_remembered = functools.lru_cache(maxsize=4096)(_forbidden)
