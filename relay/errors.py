"""The relay's exceptions and the one JSON shape every error response takes."""
import logging

from flask import jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


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


def _relay_error(exc):
    return jsonify(error_body(exc.code, exc.message, exc.fields)), exc.status_code


def validation_fields(exc: ValidationError) -> dict:
    """A marshmallow error's messages as an error's fields: by field name, "_schema" for the whole input."""
    return exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}


def _validation_error(exc):
    return jsonify(error_body("invalid_input", "invalid input", validation_fields(exc))), 400


def _http_error(exc):
    code = (exc.name or "error").lower().replace(" ", "_")
    headers = [(name, value) for name, value in exc.get_headers() if name != "Content-Type"]  # a 405's Allow
    return jsonify(error_body(code, exc.description or exc.name)), exc.code, headers


def _unexpected_error(exc):
    log.exception("unhandled error")
    return jsonify(error_body("internal_error", "internal error; see the relay's log")), 500


def init_app(app):
    """Register the handlers that turn every error into the shared JSON shape."""
    app.register_error_handler(RelayError, _relay_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
