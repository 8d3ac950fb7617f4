"""Schemathesis hooks for ringup's API: what docs/openapi.yaml states in
words because JSON Schema cannot say it.

- An `application/x-ndjson` batch is described by what it holds, an array
  of records; it is sent one JSON value per line, as a client would.
  Anything that is not an array (schemathesis also sends what the schema
  rules out) goes as a single line.
- A PUT body's `id`, if any, must equal the path's `id` (a rule across the
  body and the path). A well-formed `id` in a generated body is set to the
  path's, so a schema-valid case is a valid request; an `id` the schema
  rules out is left as it is, so a negative case stays negative.
- A node to add is looked for at its address: a well-formed `addr` is
  pointed at a loopback port where nothing listens
  (`RINGUP_CONFORMANCE_NO_NODE`), so that the run sends nothing past
  loopback and the answer is the documented `400 no_node`."""

import json
import os
import re
from urllib.parse import unquote

import schemathesis

WELL_FORMED_ID = re.compile(r"[^_/][^/]*")
WELL_FORMED_ADDR = re.compile(r"[^/ :]+:[0-9]{1,5}")
NO_NODE = os.environ.get("RINGUP_CONFORMANCE_NO_NODE", "127.0.0.1:9")


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    values = value if isinstance(value, list) else [value]
    return "".join(json.dumps(v) + "\n" for v in values).encode()


@schemathesis.hook
def map_case(ctx, case):
    body = case.body
    if case.method.upper() == "PUT" and isinstance(body, dict) and "id" in (case.path_parameters or {}):
        inner = body.get("id")
        if isinstance(inner, str) and WELL_FORMED_ID.fullmatch(inner) and 1 <= len(inner.encode()) <= 256:
            # The path parameter is held percent-encoded, as it is sent.
            body["id"] = unquote(case.path_parameters["id"])
    if case.method.upper() == "POST" and case.path == "/v1/cluster/nodes" and isinstance(body, dict):
        addr = body.get("addr")
        if isinstance(addr, str) and WELL_FORMED_ADDR.fullmatch(addr):
            body["addr"] = NO_NODE
    return case
