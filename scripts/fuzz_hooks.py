"""Schemathesis hooks for scripts/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

1. A custom check, `error_body_is_json`: every 4xx/5xx response must carry an
   `application/json` content type and a body that parses as a JSON object
   (the API's `{"error": code, "message": ...}`), whatever the OpenAPI
   document says about that status code.

2. A `map_case` hook that makes the generated requests reach the handlers
   more often. Random int64 ids almost never name a seeded row, so without it
   every write would stop at 404 and every read would be a 404 too. For a
   share of the cases it substitutes
   - a seeded user (1..FUZZ_USERS) for `X-User-Id`,
   - a seeded user or post for the `{id}` path parameter and for `userId`,
   - the real admin token for `Authorization` on the admin routes.
   The rest of the cases keep what schemathesis generated, so missing,
   malformed and out-of-range values (and wrong tokens) are still sent:
   values schemathesis made invalid on purpose are mostly kept, valid ones
   mostly replaced, and a case made invalid elsewhere (an invalid or missing
   body, say) always gets real ones, so that it reaches the code it is
   aimed at instead of stopping at the acting-user or token check.
   The choice is a pure function of FUZZ_SEED and the generated case, so a
   run is as reproducible as schemathesis' own `--seed` makes it, with any
   number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import schemathesis

ADMIN_TOKEN = os.environ["FUZZ_ADMIN_TOKEN"]
SEED = os.environ.get("FUZZ_SEED", "42")
USERS = int(os.environ.get("FUZZ_USERS", "10000"))
POSTS = int(os.environ.get("FUZZ_POSTS", "100000"))

# Chance that a value is replaced by a real one. In a case schemathesis made
# invalid on purpose somewhere else (the body, say), always: the request must
# get past the acting-user and token checks to reach what the case is about.
# Where it made this very value invalid, rarely: the invalid value is the
# point. In a valid case, mostly: some generated ids and tokens still go
# through, to exercise 401, 404 and the range checks.
REAL_VALUE_SHARE = {"invalid_elsewhere": 1.0, "invalid_here": 0.25, "valid": 0.75}


def _rng(case) -> random.Random:
    """A generator seeded by FUZZ_SEED and the case as generated."""
    material = repr(
        (
            SEED,
            case.method,
            case.path,
            sorted((str(k), _stable(v)) for k, v in (case.path_parameters or {}).items()),
            sorted((str(k), _stable(v)) for k, v in (case.headers or {}).items()),
            sorted((str(k), _stable(v)) for k, v in (case.query or {}).items()),
            _stable(case.body),
        )
    )
    digest = hashlib.sha256(material.encode("utf-8", "backslashreplace")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _stable(value) -> str:
    """A text form of a generated value that is the same in every run (no
    object addresses, e.g. of schemathesis' NOT_SET)."""
    if isinstance(value, (str, bytes, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_stable(k)}:{_stable(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_stable(v) for v in value) + "]"
    return type(value).__name__


def _is_negative(mode) -> bool:
    return str(getattr(mode, "value", mode)).lower().endswith("negative")


def _invalid_locations(case) -> set[str]:
    """The parts of the request ("header", "path", "query", "body") that
    schemathesis generated as invalid on purpose."""
    meta = case.meta
    if meta is None:
        return set()
    out = {
        str(getattr(location, "value", location))
        for location, info in (meta.components or {}).items()
        if _is_negative(info.mode)
    }
    target = getattr(meta.phase.data, "parameter_location", None)
    if target is not None and _is_negative(meta.generation.mode):
        out.add(str(getattr(target, "value", target)))
    return out


@schemathesis.hook
def map_case(context, case):
    rng = _rng(case)
    invalid = _invalid_locations(case)
    path = case.operation.path

    def lucky(location: str) -> bool:
        if location in invalid:
            share = REAL_VALUE_SHARE["invalid_here"]
        elif invalid:
            share = REAL_VALUE_SHARE["invalid_elsewhere"]
        else:
            share = REAL_VALUE_SHARE["valid"]
        return rng.random() < share

    if path.startswith("/api/admin/"):
        if lucky("header"):
            _set(case, "headers", "Authorization", f"Bearer {ADMIN_TOKEN}")
        return case

    if any(p.get("name") == "X-User-Id" for p in _parameters(case)) and lucky("header"):
        _set(case, "headers", "X-User-Id", str(rng.randint(1, USERS)))

    if "{id}" in path and lucky("path"):
        upper = POSTS if path.startswith("/api/posts/") else USERS
        _set(case, "path_parameters", "id", str(rng.randint(1, upper)))

    if path == "/api/user/stats-optimized" and lucky("query"):
        _set(case, "query", "userId", str(rng.randint(1, USERS)))

    return case


def _set(case, container: str, key: str, value: str) -> None:
    """Sets one item of a case's headers, path parameters or query."""
    current = getattr(case, container)
    if current is None:
        setattr(case, container, {key: value})
    else:
        current[key] = value
        setattr(case, container, current)  # let schemathesis re-validate the case


def _parameters(case):
    definition = getattr(case.operation, "definition", None)
    raw = getattr(definition, "raw", None) or {}
    return [p for p in raw.get("parameters", []) if isinstance(p, dict)]


@schemathesis.check
def error_body_is_json(ctx, response, case):
    """Every 4xx/5xx body is JSON: `application/json` and a JSON object."""
    if response.status_code < 400:
        return None
    values = response.headers.get("content-type") or []
    content_type = values[0] if values else ""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise AssertionError(
            f"{response.status_code} error body is not declared as JSON: "
            f"content-type {content_type!r}, body {response.content[:200]!r}"
        )
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(
            f"{response.status_code} error body does not parse as JSON ({e}): {response.content[:200]!r}"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise AssertionError(
            f'{response.status_code} error body is not {{"error": code, "message": ...}}: {response.content[:200]!r}'
        )
    return None
