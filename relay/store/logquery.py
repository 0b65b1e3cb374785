"""Finding incident_log rows for people: filters, text search, counts per status, newest first, keyset pagination."""
import json

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import func, or_, select

from relay.store.models import IncidentLog, utcnow
from relay.store.states import STATUSES
from relay.timeutil import parse_since

MAX_LIMIT = 500
TRIGGER = "trigger"


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
    """The query string of GET /api/v1/log and the log page; a parameter it does not know is refused."""

    class Meta:
        unknown = RAISE  # a misspelt filter must not quietly list everything

    status = fields.Str(validate=validate.OneOf(STATUSES))
    source = fields.Str(validate=[validate.Length(min=1, max=32), NO_NUL])
    route = fields.Str(validate=[validate.Length(min=1, max=128), NO_NUL])
    dedup_key = fields.Str(validate=[validate.Length(min=1, max=255), NO_NUL])
    q = fields.Str(validate=[validate.Length(min=1, max=200), NO_NUL], metadata={
        "description": "words that must each appear, in any letter case, in the summary, the dedup key or the "
                       "alert's labels (names or values)"})
    since = Moment()
    until = Moment()
    before_id = fields.Int(validate=validate.Range(min=1, max=2**63 - 1))  # ids are 64-bit
    limit = fields.Int(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))


LogFilterSchema.error_messages = {
    "unknown": "unknown parameter; the known ones are " + ", ".join(LogFilterSchema._declared_fields)}
log_filter = LogFilterSchema()


def _like(text: str) -> str:
    """A LIKE pattern finding text anywhere, its own wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _word_found(word: str):
    """The condition that a word is in the row's summary, dedup key or labels, in any letter case."""
    in_labels = json.dumps(word, ensure_ascii=False)[1:-1]  # the labels are searched as JSON text: "a\"b"
    return or_(IncidentLog.summary.ilike(_like(word), escape="\\"),
               IncidentLog.dedup_key.ilike(_like(word), escape="\\"),
               IncidentLog.alert["labels"].as_string().ilike(_like(in_labels), escape="\\"))


def _conditions(args: dict, with_status: bool = True) -> list:
    """The WHERE conditions of the filters in args (as log_filter loaded them), paging aside."""
    conditions = []
    for name in ("status", "source", "route", "dedup_key") if with_status else ("source", "route", "dedup_key"):
        if name in args:
            conditions.append(getattr(IncidentLog, name) == args[name])
    if "since" in args:
        conditions.append(IncidentLog.created_at >= args["since"])
    if "until" in args:
        conditions.append(IncidentLog.created_at < args["until"])
    conditions.extend(_word_found(word) for word in args.get("q", "").split())
    return conditions


def find(session, args: dict, *options) -> tuple[list[IncidentLog], int | None]:
    """Return one page of rows matching the filters, newest first, and the cursor for the next page.

    options are loader options for the query, e.g. the log page's defer() of the JSON columns it never shows.
    """
    query = (select(IncidentLog).options(*options).where(*_conditions(args))
             .order_by(IncidentLog.id.desc()).limit(args["limit"] + 1))
    if "before_id" in args:
        query = query.where(IncidentLog.id < args["before_id"])
    rows = session.scalars(query).all()
    more = len(rows) > args["limit"]
    rows = rows[: args["limit"]]
    return rows, (rows[-1].id if more else None)


def status_counts(session, args: dict) -> dict[str, int]:
    """Count the rows matching the filters by status, in one query; the status filter itself is left out, so each
    count says what choosing that status would list."""
    found = dict(session.execute(select(IncidentLog.status, func.count()).where(*_conditions(args, with_status=False))
                                 .group_by(IncidentLog.status)).all())
    return {status: found.get(status, 0) for status in STATUSES}


def alert_summaries(session, rows: list[IncidentLog]) -> dict[int, str]:
    """The summary of the alert of each row that carries none (an acknowledge or resolve sent by dedup key): that
    of the latest trigger before it for the same routing and dedup key, by row id, in one query at most."""
    wanted = [row.id for row in rows if not row.summary and row.event_action != TRIGGER and row.dedup_key]
    if not wanted:
        return {}
    trigger = IncidentLog.__table__.alias("trigger")
    follow_up = IncidentLog.__table__.alias("follow_up")
    summary = (select(trigger.c.summary)
               .where(trigger.c.dedup_key == follow_up.c.dedup_key, trigger.c.routing_key == follow_up.c.routing_key,
                      trigger.c.id < follow_up.c.id, trigger.c.event_action == TRIGGER,
                      trigger.c.summary.is_not(None))
               .order_by(trigger.c.id.desc()).limit(1).scalar_subquery())
    found = session.execute(select(follow_up.c.id, summary).where(follow_up.c.id.in_(wanted))).all()
    return {log_id: text for log_id, text in found if text}
