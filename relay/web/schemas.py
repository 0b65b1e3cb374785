"""Marshmallow schemas of what the relay answers: the views dump every answer through them, and /openapi.json
documents them (requests have their own)."""
from marshmallow import Schema, fields


class IsoDateTime(fields.DateTime):
    """An ISO 8601 date-time; dumped as is when the log's shown form already holds it as text."""

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, str):
            return value
        return super()._serialize(value, attr, obj, **kwargs)


class ErrorDetailSchema(Schema):
    """The inside of every error answer."""

    code = fields.Str(required=True, metadata={"example": "invalid_input"})
    message = fields.Str(required=True)
    fields = fields.Dict(metadata={"description": "per-field messages, for validation errors"})


class ErrorSchema(Schema):
    """The one shape of every error answer (except the job's PagerDutyError)."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class JobResultSchema(Schema):
    """The create-incident job's answer: delivered (200) or stored and still queued (202)."""

    success = fields.Bool(required=True)
    status = fields.Str(allow_none=True, metadata={"description": "PagerDuty's status, or \"queued\""})
    message = fields.Str(allow_none=True)
    dedup_key = fields.Str(required=True, metadata={"description": "the key to acknowledge or resolve with"})
    log_id = fields.Int(required=True)


class PagerDutyErrorSchema(Schema):
    """The original job's failure shape, kept for compatibility, with the row and the dedup key."""

    name = fields.Str(required=True, metadata={"example": "PagerDutyError"})
    value = fields.Str(required=True, metadata={"example": "PagerDuty API error: Event object is invalid"})
    log_id = fields.Int(required=True)
    dedup_key = fields.Str(required=True)


class PagerDutyAnswerSchema(Schema):
    """PagerDuty's last answer to a row."""

    status = fields.Str(allow_none=True)
    message = fields.Str(allow_none=True)
    errors = fields.List(fields.Str())


class DropInAcceptedSchema(Schema):
    """The drop-in endpoint's answer once an event is stored, as PagerDuty gives it: v2 with the dedup key PagerDuty
    gets, v1 with it as incident_key, a change event with neither."""

    status = fields.Str(required=True, metadata={"example": "success"})
    message = fields.Str(required=True, metadata={"example": "Event processed"})
    dedup_key = fields.Str()
    incident_key = fields.Str()


class LogEntrySchema(Schema):
    """One incident_log row; the routing key is masked."""

    id = fields.Int(required=True)
    created_at = IsoDateTime(required=True)
    source = fields.Str(required=True)
    route = fields.Str(allow_none=True)
    event_action = fields.Str(required=True)
    dedup_key = fields.Str(allow_none=True)
    summary = fields.Str(allow_none=True, metadata={
        "description": "the event's summary; for an acknowledge or resolve, its alert's (the trigger's before it)"})
    severity = fields.Str(allow_none=True)
    routing_key = fields.Str(required=True, metadata={"example": "…cdef"})
    status = fields.Str(required=True)
    attempts = fields.Int(required=True)
    next_attempt_at = IsoDateTime(allow_none=True)
    delivered_at = IsoDateTime(allow_none=True)
    http_status = fields.Int(allow_none=True)
    pagerduty = fields.Nested(PagerDutyAnswerSchema)
    error = fields.Str(allow_none=True)
    events_url = fields.Str(allow_none=True, metadata={
        "description": "where every attempt of the row goes, fixed when it was stored (without credentials); "
                       "null for rows stored before it was kept: the sending process's PAGERDUTY_EVENTS_URL",
        "example": "https://events.pagerduty.com/v2/enqueue"})
    reason = fields.Str(allow_none=True, metadata={
        "description": "why a retrying, failed, dead, unrouted, stale, superseded or held row is so: PagerDuty's "
                       "last answer and the relay's error"})
    superseded_by = fields.Int(allow_none=True, metadata={
        "description": "a superseded row (never sent): the id of the row of its alert it was collapsed into"})
    cause = fields.Str(allow_none=True, metadata={
        "description": "why the relay sent the event of its own accord, e.g. the reconciler's",
        "example": "reconciled: silenced by 5f0c… (ann: maintenance window)"})


class AttemptSchema(Schema):
    """One delivery attempt."""

    started_at = IsoDateTime(required=True)
    duration_ms = fields.Float(allow_none=True)
    outcome = fields.Str(required=True)
    http_status = fields.Int(allow_none=True)
    error = fields.Str(allow_none=True)


class LogDetailSchema(LogEntrySchema):
    """One row in full: the event sent, the alert it came from, every attempt."""

    event = fields.Dict(required=True)
    alert = fields.Dict(allow_none=True)
    attempt_log = fields.List(fields.Nested(AttemptSchema), required=True)


class LogPageSchema(Schema):
    """A page of rows, newest first; pass next_before_id as before_id for the next page."""

    items = fields.List(fields.Nested(LogEntrySchema), required=True)
    next_before_id = fields.Int(allow_none=True)


class PlannedEventSchema(Schema):
    """What became of one alert of a webhook."""

    log_id = fields.Int()
    route = fields.Str(allow_none=True)
    event_action = fields.Str(required=True)
    dedup_key = fields.Str(allow_none=True)
    routing_key = fields.Str(required=True)
    status = fields.Str(metadata={"description": "unrouted, stale, superseded or held (its route's storm valve) when "
                                                "the event is never sent, heartbeat for an alert of a heartbeat "
                                                "route; absent when it will be"})
    problem = fields.Str()
    send_after_seconds = fields.Int()  # held back so long after it was stored (a test notification's resolve)
    superseded_by = fields.Int(metadata={"description": "a superseded event: the row of its alert that carries it"})


class WebhookAcceptedSchema(Schema):
    """A webhook's answer: every event stored before it was sent."""

    accepted = fields.Int(required=True)
    events = fields.List(fields.Nested(PlannedEventSchema), required=True)


class PreviewEventSchema(PlannedEventSchema):
    """A previewed event, in full, routing key masked."""

    event = fields.Dict(required=True)


class PreviewSchema(Schema):
    """The events a payload would produce."""

    events = fields.List(fields.Nested(PreviewEventSchema), required=True)


class RetrySchema(Schema):
    """A row put back in the outbox."""

    log_id = fields.Int(required=True)
    status = fields.Str(required=True)


class HeartbeatSchema(Schema):
    """One heartbeat the relay watches (docs/heartbeats.md); the routing key is masked."""

    name = fields.Str(required=True)
    kind = fields.Str(required=True, metadata={"description": "watchdog (a route's alerts) or job (HEARTBEATS)"})
    route = fields.Str(allow_none=True)
    subject = fields.Str(allow_none=True, metadata={"description": "a watchdog's sender or label set"})
    state = fields.Str(required=True, metadata={"description": "starting, up, late or down (paged)"})
    up = fields.Bool(required=True)
    last_seen = IsoDateTime(allow_none=True)
    last_start = IsoDateTime(allow_none=True)
    next_expected = IsoDateTime(allow_none=True)
    watched_since = IsoDateTime(required=True)
    changed_at = IsoDateTime(required=True)
    last_message = fields.Str(allow_none=True)
    dedup_key = fields.Str(required=True, metadata={"description": "the dedup key of its incident"})
    routing_key = fields.Str(required=True, metadata={"example": "…cdef"})


class HeartbeatListSchema(Schema):
    """Every heartbeat, jobs then watchdogs, by name."""

    items = fields.List(fields.Nested(HeartbeatSchema), required=True)


job_result = JobResultSchema()
pagerduty_error = PagerDutyErrorSchema()
log_page = LogPageSchema()
log_detail = LogDetailSchema()
webhook_accepted = WebhookAcceptedSchema()
preview = PreviewSchema()
retried = RetrySchema()
dropin_accepted = DropInAcceptedSchema()
heartbeat = HeartbeatSchema()
heartbeat_list = HeartbeatListSchema()
