"""CSV cells a spreadsheet reads as text, never as a formula (OWASP "CSV Injection").

Audit exports carry client-chosen text (`user`, `model_requested`, bodies, …) and are opened
by compliance staff in Excel, LibreOffice or Google Sheets, which run a cell such as
`=HYPERLINK("http://evil", "x")` or `=cmd|' /C calc'!A0` as a formula. The rules, after
OWASP's guidance:

- every cell is wrapped in double quotes, inner double quotes doubled (RFC 4180), so a `,`,
  `;` or tab inside a value never starts a new cell, whatever separator the spreadsheet's
  locale assumes;
- a text cell whose first character is `=`, `+`, `-`, `@`, tab, carriage return, line feed
  or NUL (ASCII, or a full-width / small form that NFKC folds to one of them, such as U+FF1D)
  gets a leading single quote, which spreadsheets take as "this is text"; so does one whose
  first character after leading spaces is one of them (some importers trim spaces).

Numbers, booleans and JSON objects are written as they are: none can start a formula
(`true`/`false`, digits, `{`, `[`). JSONL exports are not touched: they are not opened by
spreadsheets and must stay byte-exact JSON.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from typing import Any

import orjson

_FORMULA_STARTS = frozenset("=+-@\t\r\n\0")


def _starts_formula(text: str) -> bool:
    first = text.lstrip(" ")[:1] or text[:1]
    if not first:
        return False
    if first in _FORMULA_STARTS:
        return True
    return not first.isascii() and unicodedata.normalize("NFKC", first)[:1] in _FORMULA_STARTS


def csv_cell(value: Any) -> Any:
    """One audit value as a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and _starts_formula(value):
        return "'" + value
    return value


def csv_writer(buf: io.StringIO) -> Any:
    """A writer that quotes every cell (see the module docstring)."""
    return csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
