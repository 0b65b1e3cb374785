"""Finding incident_log rows for people: filters, newest first, keyset pagination."""
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from sqlalchemy import select

from relay.store.models import IncidentLog, utcnow
from relay.store.states import STATUSES
from relay.timeutil import parse_since

MAX_LIMIT = 500


class Moment(fields.Field):
    """A moment given as an ISO 8601 time or a duration back from now (30m, 2h, 7d)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_since(str(value), utcnow())
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


# A NUL in a URL is refused before any handler (relay/payloads.py); said here so the OpenAPI document says it.
NO_NUL = validate.Regexp(r"^[^\x00]*$", error="NUL characters are not allowed")


class LogFilterSchema(Schema):
    """The query string of GET /api/v1/log and the log page."""

    class Meta:
        unknown = EXCLUDE

    status = fields.Str(validate=validate.OneOf(STATUSES))
    source = fields.Str(validate=[validate.Length(min=1, max=32), NO_NUL])
    route = fields.Str(validate=[validate.Length(min=1, max=128), NO_NUL])
    dedup_key = fields.Str(validate=[validate.Length(min=1, max=255), NO_NUL])
    since = Moment()
    until = Moment()
    before_id = fields.Int(validate=validate.Range(min=1, max=2**63 - 1))  # ids are 64-bit
    limit = fields.Int(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))


log_filter = LogFilterSchema()


def find(session, args: dict, *options) -> tuple[list[IncidentLog], int | None]:
    """Return one page of rows matching the filters, newest first, and the cursor for the next page.

    options are loader options for the query, e.g. the log page's defer() of the JSON columns it never shows.
    """
    query = select(IncidentLog).options(*options).order_by(IncidentLog.id.desc()).limit(args["limit"] + 1)
    for name in ("status", "source", "route", "dedup_key"):
        if name in args:
            query = query.where(getattr(IncidentLog, name) == args[name])
    if "since" in args:
        query = query.where(IncidentLog.created_at >= args["since"])
    if "until" in args:
        query = query.where(IncidentLog.created_at < args["until"])
    if "before_id" in args:
        query = query.where(IncidentLog.id < args["before_id"])
    rows = session.scalars(query).all()
    more = len(rows) > args["limit"]
    rows = rows[: args["limit"]]
    return rows, (rows[-1].id if more else None)
