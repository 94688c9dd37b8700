"""A URL field as the detectors see it, and the URL rebuilt around redacted text.

`text_of(url)` is the text a URL carries: an http(s) or other URL percent-decoded
(`?email=bob%40example.com` is seen as `bob@example.com`); a `data:` URL's decoded payload
when its media type is text (`text/*`, JSON, XML, SVG, or none given, which means
`text/plain`), from base64 or percent-encoding; None for a binary `data:` payload (images,
audio, PDF): there is no text in it to scan (no OCR or speech recognition here).

`rebuild(url, text)` puts redacted text back in the URL's own encoding. It is called only
when something was found, so URLs without PII are passed on byte for byte.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote, unquote

# Reserved and unreserved characters stay as they are when a decoded URL is re-encoded.
_URL_SAFE = ":/?#[]@!$&'()*+,;=~"
_TEXT_TYPES = ("text/",)
_TEXT_SUFFIXES = ("/json", "+json", "/xml", "+xml", "/javascript", "/x-www-form-urlencoded")


def _data_parts(url: str) -> tuple[str, bool, str, str] | None:
    """`(header, is_base64, media_type, payload)` of a `data:` URL, else None."""
    if url[:5].lower() != "data:":
        return None
    header, comma, payload = url.partition(",")
    if not comma:
        return None
    params = header[5:].split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    media_type = params[0].strip().lower()
    return header, is_base64, media_type, payload


def _is_text(media_type: str) -> bool:
    return not media_type or media_type.startswith(_TEXT_TYPES) or \
        media_type.endswith(_TEXT_SUFFIXES)


def text_of(url: str) -> str | None:
    """The text `url` carries (see the module docstring); None: a binary payload."""
    data = _data_parts(url)
    if data is None:
        return unquote(url) if "%" in url else url
    _, is_base64, media_type, payload = data
    if not _is_text(media_type):
        return None
    if not is_base64:
        return unquote(payload)
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return url  # not valid base64: scanned as it is written
    return raw.decode("utf-8", "surrogateescape")  # any bytes round-trip exactly


def rebuild(url: str, text: str) -> str:
    """`url` with its text replaced by `text` (a redacted `text_of(url)`)."""
    data = _data_parts(url)
    if data is None:
        return quote(text, safe=_URL_SAFE) if "%" in url else text
    header, is_base64, _, payload = data
    if not is_base64:
        return f"{header},{quote(text, safe=_URL_SAFE)}"
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return text  # it was scanned as written: the redacted text is the new URL
    return f"{header},{base64.b64encode(text.encode('utf-8', 'surrogateescape')).decode()}"
