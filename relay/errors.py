"""The relay's exceptions and the one JSON shape every error response takes."""
import logging

from flask import current_app, g, has_request_context, jsonify, request
from marshmallow import ValidationError
from sqlalchemy import event
from sqlalchemy.pool import Pool
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from relay.store import failures

log = logging.getLogger(__name__)
STORE_RETRY_AFTER_SECONDS = 5
# This process's web requests' view of the store: an outage is logged as it starts, while it lasts and as it ends.
store_outage = failures.Outage(log, "requests that need the store are answered 503 with Retry-After")


class RelayError(Exception):
    """An error the relay answers with its own JSON shape."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.message = message
        self.fields = fields


class BadInput(RelayError):
    """The request is malformed or fails validation; the caller must fix it."""

    code = "invalid_input"


class StoreUnavailable(RelayError):
    """The store cannot be read or written now; the same request may well succeed later (503, Retry-After)."""

    status_code = 503
    code = "store_unavailable"
    retry_after = STORE_RETRY_AFTER_SECONDS


class NotJson(BadInput):
    """The body is not declared as JSON; a browser can send other types cross-site without asking first."""

    status_code = 415
    code = "unsupported_media_type"


def error_body(code, message, fields=None):
    """Build the error JSON every route shares."""
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def store_unavailable(exc: Exception) -> StoreUnavailable | None:
    """The 503 for an exception that says the store is failing (noted in this process's outage), else None."""
    problem = failures.describe(exc, current_app.config["SQLALCHEMY_DATABASE_URI"])
    if problem is None:
        return None
    store_outage.failed(problem)
    # The reason only: the address is for the relay's log and /readyz, not for every sender.
    return StoreUnavailable(f"the store is unavailable ({problem.reason}); try again later")


def retry_after_headers(exc: RelayError) -> dict:
    """A Retry-After header for errors that pass with time, else none."""
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry_after)} if retry_after else {}


def _relay_error(exc):
    return jsonify(error_body(exc.code, exc.message, exc.fields)), exc.status_code, retry_after_headers(exc)


def validation_fields(exc: ValidationError) -> dict:
    """A marshmallow error's messages as an error's fields: by field name, "_schema" for the whole input."""
    return exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}


def _validation_error(exc):
    return jsonify(error_body("invalid_input", "invalid input", validation_fields(exc))), 400


def _http_error(exc):
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = [(name, value) for name, value in exc.get_headers() if name != "Content-Type"]  # a 405's Allow
    return jsonify(error_body(code, _description(exc))), exc.code, headers


def _description(exc: HTTPException) -> str:
    """Say what went wrong; for routing's 405, the methods the URL takes (its Allow, less HEAD and OPTIONS)."""
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods and exc.description == MethodNotAllowed.description:
        taken = sorted(set(exc.valid_methods) - {"HEAD", "OPTIONS"}) or sorted(exc.valid_methods)
        return f"this URL takes {' or '.join(taken)}, not {request.method}"
    return exc.description or exc.name


def _unexpected_error(exc):
    unavailable = store_unavailable(exc)
    if unavailable is not None:
        return _relay_error(unavailable)
    log.exception("unhandled error")
    return jsonify(error_body("internal_error", "internal error; see the relay's log")), 500


def init_app(app):
    """Register the handlers that turn every error into the shared JSON shape."""
    app.register_error_handler(RelayError, _relay_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_note_store_recovery)
    if not event.contains(Pool, "checkout", _note_store_use):
        event.listen(Pool, "checkout", _note_store_use)


def _note_store_use(_dbapi_connection, _record, _proxy):
    """During an outage, mark requests that got a store connection (pool_pre_ping has checked it)."""
    if store_outage.down and has_request_context():
        g.store_used = True


def _note_store_recovery(response):
    """End the outage in the log once a request that used the store is answered without a server error."""
    if store_outage.down and response.status_code < 500 and g.get("store_used"):
        store_outage.recovered()
    return response
