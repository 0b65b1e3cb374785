"""Reading request input safely: the body as a checked JSON payload, and no NUL characters in the URL."""
from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from relay.errors import BadInput, NotJson
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


def init_app(app):
    """Check every request's URL before it reaches a view."""
    app.before_request(refuse_nul_in_url)
