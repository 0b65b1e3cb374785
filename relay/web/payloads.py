"""Reading request input safely: JSON syntax, shape, nesting depth, NUL characters and lone surrogates."""
import json
import re

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import BadInput, NotJson

NUL = "\u0000"
REPLACEMENT = "\ufffd"
# U+0000 and lone UTF-16 surrogates reach a string only through JSON escapes (\u0000, \ud800…): checked in the raw
# body first, so a body without them is never walked. Neither can be stored or sent: PostgreSQL text refuses
# U+0000, and a lone surrogate is no UTF-8 at all.
_UNFIT_ESCAPE = re.compile(rb"\\u(0000|[dD][89a-fA-F])")
_UNFIT = re.compile("[\u0000\ud800-\udfff]")


def nesting_depth(value) -> int:
    """Return how deeply arrays and objects nest in a JSON value (a scalar is 0)."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def read_json(allow_array=False):
    """Return the request body as a JSON object (or array, if allowed), or raise BadInput saying why."""
    if not request.is_json:  # a cross-site form or text/plain POST from a browser is refused unread
        raise NotJson("send the body with Content-Type: application/json")
    raw = request.get_data(cache=True)
    if (request.content_length is None and len(raw) >= (request.max_content_length or float("inf"))
            and request.environ["wsgi.input"].read(1)):  # a chunked body was cut at the limit: more was sent
        raise RequestEntityTooLarge()
    if not raw.strip():
        raise BadInput("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"))  # RFC 8259: JSON between systems is UTF-8
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise BadInput(f"the request body is not valid JSON: {_reason(exc)}") from None
    if not isinstance(data, dict) and not (allow_array and isinstance(data, list)):
        wanted = "a JSON object or an array of objects" if allow_array else "a JSON object"
        raise BadInput(f"the request body must be {wanted}")
    limit = current_app.config["RELAY_MAX_JSON_DEPTH"]
    if raw.count(b"[") + raw.count(b"{") > limit and nesting_depth(data) > limit:  # fewer brackets: none too deep
        raise BadInput(f"the request body nests deeper than {limit} levels")
    return storable(data) if _UNFIT_ESCAPE.search(raw) else data


def storable(value):
    """Replace U+0000 and lone surrogates by U+FFFD in every string of a JSON value, object keys included (a
    surrogate pair was already joined into its character by the JSON parser)."""
    if isinstance(value, str):
        return _UNFIT.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _reason(exc):
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc)


def refuse_nul_in_url():
    """Refuse NUL characters in the path or query string with a 400 rather than a store error."""
    if NUL in request.path or (request.query_string and any(NUL in key + value
                                                            for key, value in request.args.items(multi=True))):
        raise BadInput("NUL characters are not allowed in the URL")


def init_app(app):
    """Check every request's URL before it reaches a view."""
    app.before_request(refuse_nul_in_url)
