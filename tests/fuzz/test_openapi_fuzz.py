"""Schemathesis over tests/fuzz/openapi.yaml, against a real `gateway serve`.

Every operation of the document gets valid requests (positive mode) and requests broken in
one place (negative mode: wrong types, missing fields, out-of-range values, extra fields).
Each answer must keep the promises of `checks.check_answer` and, where the document
describes it, match its status code, content type and response schema. Requests that must
leave an audit event carry an `x-request-id`; the session checks one event for each.
"""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.checks import TIMEOUT_S, check_answer
from tests.fuzz.conftest import SEED, FuzzTarget, hypothesis_settings

# The bounded run (make test) fuzzes only; `make fuzz` (FUZZ_COVERAGE=1) adds Schemathesis's
# coverage phase: boundary values and every negative variant of every field, deterministic.
CONFIG = schemathesis.Config.from_dict({
    "seed": None if SEED == "random" else int(SEED),
    "phases": {"coverage": {"enabled": os.environ.get("FUZZ_COVERAGE") == "1"},
               "stateful": {"enabled": False}},
    "generation": {"mode": "all", "with-security-parameters": False},
    "max-stream-events": 100_000,  # read whole streams: their ending is checked
})
SCHEMA = schemathesis.openapi.from_path(Path(__file__).with_name("openapi.yaml"), config=CONFIG)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Admin changes are audited like /v1 requests (reads are not).
AUDITED = frozenset({"create_key", "update_key", "revoke_key", "create_team", "update_team",
                     "create_template", "add_version", "set_label", "delete_label"})


def _key(target: FuzzTarget, path: str) -> str:
    return target.app_key if path.startswith("/v1/") else target.admin_key


def _exercise(case: schemathesis.Case, target: FuzzTarget) -> None:
    path = case.operation.path
    headers = {"authorization": f"Bearer {_key(target, path)}"}
    if (path.startswith("/v1/") and case.method == "POST") \
            or case.operation.definition.raw.get("operationId") in AUDITED:
        headers["x-request-id"] = target.request_id()
    response = case.call(base_url=target.gateway.url, headers=headers, timeout=TIMEOUT_S)
    check_answer(path, response.status_code, response.headers, response.content)
    case.validate_response(response, checks=CHECKS)


# The model endpoints are the public face: more examples there (the property tests in
# test_v1_properties.py add theirs to the same endpoints).
@SCHEMA.include(path_regex="^/v1/").parametrize()
@hypothesis_settings(200)
def test_model_endpoints_keep_the_contract(case: schemathesis.Case,
                                           fuzz_target: FuzzTarget) -> None:
    _exercise(case, fuzz_target)


@SCHEMA.exclude(path_regex="^/v1/").parametrize()
@hypothesis_settings(60)
def test_admin_audit_and_ops_endpoints_keep_the_contract(case: schemathesis.Case,
                                                         fuzz_target: FuzzTarget) -> None:
    _exercise(case, fuzz_target)
