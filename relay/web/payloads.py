"""Reading request input safely: the body as a checked JSON payload within RELAY_MAX_BODY_BYTES, and no NUL
characters in the URL."""
from flask import current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import BadInput, NotJson, error_body
from relay.intake import payload

NUL = "\u0000"


def read_json(allow_array=False):
    """Return the request body as a JSON object (or array, if allowed), or raise BadInput saying why."""
    if not request.is_json:  # a cross-site form or text/plain POST from a browser is refused unread
        raise NotJson("send the body with Content-Type: application/json")
    raw = request.get_data(cache=True)
    if (request.content_length is None and len(raw) >= (request.max_content_length or float("inf"))
            and request.environ["wsgi.input"].read(1)):  # a chunked body was cut at the limit: more was sent
        raise RequestEntityTooLarge()
    return payload.parse(raw, current_app.config["RELAY_MAX_JSON_DEPTH"], allow_array)


def refuse_nul_in_url():
    """Refuse NUL characters in the path or query string with a 400 rather than a store error."""
    if NUL in request.path or (request.query_string and any(NUL in key + value
                                                            for key, value in request.args.items(multi=True))):
        raise BadInput("NUL characters are not allowed in the URL")


def body_too_large(exc: RequestEntityTooLarge):
    """Answer a body over RELAY_MAX_BODY_BYTES with a 413 naming the setting and its value."""
    limit, length = request.max_content_length, request.content_length
    if limit is None or (length is not None and length <= limit):
        message = exc.description  # a form over Werkzeug's own form limits, not the body over the relay's
    else:
        size = f"is {length} bytes" if length is not None else f"is over {limit} bytes"  # chunked: cut at the limit
        message = f"the request body {size}; at most {limit} are taken in one request (RELAY_MAX_BODY_BYTES)"
    return jsonify(error_body(payload.TooLarge.code, message)), 413


def init_app(app):
    """Check every request's URL before it reaches a view; say which setting an over-large body is over."""
    app.before_request(refuse_nul_in_url)
    app.register_error_handler(RequestEntityTooLarge, body_too_large)
