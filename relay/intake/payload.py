"""Reading a JSON payload safely, whoever hands it in (a request body, a file): syntax, shape, nesting depth,
NUL characters and lone surrogates; and how many alerts, labels and annotations it may carry."""
import json
import re
from dataclasses import dataclass

from relay.errors import BadInput

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


def parse(raw: bytes, max_depth: int, allow_array=False):
    """Return raw as a JSON object (or array, if allowed), or raise BadInput saying why."""
    if not raw.strip():
        raise BadInput("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"))  # RFC 8259: JSON between systems is UTF-8
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser's stack
        raise BadInput(f"the request body is not valid JSON: {_reason(exc)}") from None
    if not isinstance(data, dict) and not (allow_array and isinstance(data, list)):
        wanted = "a JSON object or an array of objects" if allow_array else "a JSON object"
        raise BadInput(f"the request body must be {wanted}")
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_depth(data) > max_depth:  # fewer: none too deep
        raise BadInput(f"the request body nests deeper than {max_depth} levels")
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


class TooLarge(BadInput):
    """The payload carries more than the relay takes in one request; the sender must send less."""

    status_code = 413
    code = "request_entity_too_large"  # the code werkzeug's 413 for an over-long body answers with


@dataclass(frozen=True)
class Limits:
    """How many alerts one payload, and labels or annotations one alert, may carry (0: no limit)."""

    alerts: int
    labels: int

    @classmethod
    def from_config(cls, config) -> "Limits":
        """Read the limits from the app's settings."""
        return cls(config["RELAY_MAX_ALERTS_PER_REQUEST"], config["RELAY_MAX_LABELS_PER_ALERT"])

    def check_count(self, count: int) -> None:
        """Refuse a payload of more alerts than the limit, before any of them is read."""
        if self.alerts and count > self.alerts:
            raise TooLarge(f"the request carries {count} alerts; at most {self.alerts} are taken in one request "
                           "(RELAY_MAX_ALERTS_PER_REQUEST): send fewer, e.g. with Alertmanager's max_alerts")

    def check_alerts(self, alerts: list) -> None:
        """Refuse a payload of more alerts than the limit, or with an alert of more labels or annotations."""
        self.check_count(len(alerts))
        if not self.labels:
            return
        for index, alert in enumerate(alerts):
            for name, values in (("labels", alert.labels), ("annotations", alert.annotations)):
                if len(values) > self.labels:
                    raise TooLarge(f"alert {index} carries {len(values)} {name}; at most {self.labels} are taken "
                                   "per alert (RELAY_MAX_LABELS_PER_ALERT)")
