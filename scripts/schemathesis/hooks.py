"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Rejections of schema-valid requests (ST202, positive-data check) that no JSON Schema can
prevent, each the documented 422 problem. The hook below drops exactly these and nothing else;
every other check, every other 422 and every other operation keep the defaults.

- `expires_at` must lie in the future and within ten years: bounds that move with the clock, so
  the schema can only say `minimum: 0` (its description says the rest). Dropped only when the
  problem is `validation_failed` with `field: expires_at` and the value sent really is outside
  (now, now + 10 years].
- An `Idempotency-Key` already used with a different body is `idempotency_key_reused`: a rule
  across requests (the generator reuses short header values like "0"). Dropped only when the
  request carried that header and the problem has that code.
- Usage ranges (GET /v1/keys/{id}/usage, GET /v1/usage): `from` after `to`, or more than 1500
  buckets, a rule across two query parameters. Dropped only for `field: from` when the hook's
  own computation of the range says it breaks that rule.
- The text rule (names, descriptions, reasons, token names: control/src/text.rs): the schema's
  `pattern` refuses the BMP part of it; characters past U+FFFF (tags, Egyptian hieroglyph format
  controls, variation selectors supplement...) have no spelling that ECMA-262 without the `u`
  flag and Python's `re` read alike. Dropped only when the problem names such a character and
  the field sent really holds it at the reported position.
- Rate limits (POST /v1/keys, PATCH /v1/keys/{id}): `rate_limit` per `rate_limit_window` over
  the plan's per-minute cap, a rule across two fields. Dropped only for `field: rate_limit`
  when the values the problem reports are the ones sent and really exceed the cap.
"""

import time

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

TEN_YEARS = 10 * 365 * 86_400


def problem_of(response):
    try:
        problem = response.json()
    except Exception:
        return {}
    return problem if isinstance(problem, dict) else {}


def expires_at_outside_the_clock_bounds(case):
    expires_at = case.body.get("expires_at") if isinstance(case.body, dict) else None
    # JSON Schema's "integer" includes integral floats such as 124262.0, and so does the service.
    if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)):
        return False
    if isinstance(expires_at, float) and not expires_at.is_integer():
        return False
    now = int(time.time())
    # The service judged with its own clock a moment earlier: a minute of slack at the top.
    return expires_at <= now or expires_at > now + TEN_YEARS - 60


GRANULARITY = {"minute": 60, "hour": 3600, "day": 86_400}


def whole(value):
    """An integer query or body value as the service reads it, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def usage_range_outside_the_rules(case):
    """`from` after `to`, or more than 1500 buckets: a rule across two parameters."""
    query = case.query or {}
    g = GRANULARITY.get(query.get("granularity", "hour"))
    if g is None:
        return False
    now = int(time.time())
    to = whole(query["to"]) if "to" in query else (now // g + 1) * g
    start = whole(query["from"]) if "from" in query else None
    if to is None:
        return False
    if start is None:
        if "from" in query:
            return False
        start = max(to - 86_400, 0)
    if start > to:
        return True
    return -(-to // g) - start // g > 1500


def rate_limit_over_the_plan(case, problem):
    """`rate_limit` above the plan's per-minute cap for the window: a rule across two fields."""
    try:
        limit, window = int(problem["rate_limit"]), int(problem["rate_limit_window"])
        cap = int(problem["max_rate_limit"])
    except (KeyError, TypeError, ValueError):
        return False
    body = case.body if isinstance(case.body, dict) else {}
    for field, value in (("rate_limit", limit), ("rate_limit_window", window)):
        if body.get(field) is not None and whole(body[field]) != value:
            return False
    return limit * 60 > cap * window


def astral_character_refused(case, problem):
    """The text rule refused a character past U+FFFF that the field sent holds where it says."""
    character, field, position = problem.get("character"), problem.get("field"), problem.get("position")
    if not isinstance(character, str) or not character.startswith("U+") or not isinstance(position, int):
        return False
    try:
        code = int(character[2:], 16)
    except ValueError:
        return False
    body = case.body if isinstance(case.body, dict) else {}
    value = body.get(field)
    return (
        code > 0xFFFF
        and isinstance(value, str)
        and 0 <= position < len(value)
        and ord(value[position]) == code
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False drops the failure. Only ST202 (422) with a cross-field rule is ever considered."""
    if not isinstance(failure, RejectedPositiveData) or failure.status_code != 422:
        return True
    operation = (case.operation.method.upper(), case.operation.path)
    problem = problem_of(response)
    if problem.get("code") != "validation_failed" and operation != ("POST", "/v1/keys"):
        return True
    if problem.get("character") is not None:
        return not astral_character_refused(case, problem)
    if operation in (("GET", "/v1/keys/{id}/usage"), ("GET", "/v1/usage")):
        return not (problem.get("field") == "from" and usage_range_outside_the_rules(case))
    if operation in (("POST", "/v1/keys"), ("PATCH", "/v1/keys/{id}")):
        if problem.get("field") == "rate_limit" and rate_limit_over_the_plan(case, problem):
            return False
    if operation != ("POST", "/v1/keys"):
        return True
    if (
        problem.get("code") == "validation_failed"
        and problem.get("field") == "expires_at"
        and expires_at_outside_the_clock_bounds(case)
    ):
        return False
    headers = {name.lower() for name in (case.headers or {})}
    if problem.get("code") == "idempotency_key_reused" and "idempotency-key" in headers:
        return False
    return True
