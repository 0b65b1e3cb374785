"""The normalized alert: what every source maps its payload into, before routing, and the link and
notification helpers sources share."""
import functools
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

FIRING = "firing"
RESOLVED = "resolved"
# The alertname Grafana gives an alert whose rule could not be evaluated (grafana pkg/services/ngalert/state
# compat.go: the rule's own name moves to the rulename label), and what that state means.
DATASOURCE_STATES = {"DatasourceNoData": "no data", "DatasourceError": "query failed"}
SOURCE_LINK = "Source"  # the text of the link to the alert's rule (a generatorURL)
ROUTING_KEY_LABEL = "routing_key"  # the label of the key a drop-in event names (never shown: it is masked)
TRUNCATED = "truncatedAlerts"  # the details key of how many alerts the sender left out of the notification


@dataclass
class Link:
    """A link shown on the PagerDuty alert."""

    href: str
    text: str = ""


@dataclass
class Alert:
    """One alert from one source, independent of the sender's wire format."""

    source: str  # registry name of the source: "alertmanager", "grafana", "generic"
    status: str  # FIRING or RESOLVED
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str | None = None  # ISO 8601 as sent, None when unknown
    ends_at: str | None = None  # ISO 8601, None while firing
    fingerprint: str | None = None  # the sender's stable id for the alert, if any
    group_key: str | None = None  # the sender's notification group, if any
    links: list[Link] = field(default_factory=list)
    image_url: str | None = None  # any scheme; the event schema keeps https only
    details: dict = field(default_factory=dict)  # source-specific extras (values, valueString, orgId…)
    receiver: str | None = None
    external_url: str | None = None
    dedup_key: str | None = None  # a dedup key the sender chose itself (generic source), None otherwise
    identity: str | None = None  # what tells apart an alert without labels of its own (generic: its summary)
    # Labels the source made from other fields of the payload (generic: what its severity path read): matched by
    # routes, but no part of the alert's identity, since a resolve seldom repeats them.
    derived_labels: tuple[str, ...] = ()
    route_labels: dict[str, str] = field(default_factory=dict)  # Alertmanager's routeLabels: the matching route's
    # An Events API v2 event its sender made itself (the drop-in endpoint), without its routing key (a label):
    # passed on as sent, re-keyed by the routes; None for the alerts the relay makes events of.
    event: dict | None = None

    def as_dict(self) -> dict:
        """The alert as plain JSON-ready data; nested values are shared, not copied."""
        return {**vars(self), "links": self.link_dicts()}  # vars: every attribute of an alert is one of its fields

    def link_dicts(self) -> list[dict]:
        """The links as plain dicts, as events and the alert's JSON carry them."""
        return [{"href": link.href, "text": link.text} for link in self.links]

    @property
    def firing(self) -> bool:
        """Tell whether the alert is firing."""
        return self.status == FIRING


def datasource_state(labels: dict) -> str | None:
    """Say what Grafana could not do for an alert it raised about its own rule ("no data", "query failed"), or
    None for an ordinary alert."""
    return DATASOURCE_STATES.get(labels.get("alertname"))


def is_http_url(href: str | None) -> bool:
    """Tell whether href is an absolute http(s) URL (Prometheus may send a relative generatorURL)."""
    if not href:
        return False
    try:
        parts = urlsplit(href)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def http_links(*candidates: tuple[str | None, str]) -> list[Link]:
    """Keep the http(s) hrefs among (href, text) candidates as links, each href once, in order."""
    links, seen = [], set()
    for href, text in candidates:
        href = (href or "").strip()
        if is_http_url(href) and href not in seen:
            seen.add(href)
            links.append(Link(href=href, text=text))
    return links


@functools.lru_cache(maxsize=256)  # every alert of a notification has its receiver, and receivers are few
def unquote_receiver(receiver: str | None) -> str | None:
    """Undo the regexp quoting of the receiver name: `web\\.hook` is receiver `web.hook`."""
    # alertmanager template/template.go Data() sets Receiver to regexp.QuoteMeta(recv); grafana/alerting
    # templates/template_data.go ExtendData copies it, so both senders need this.
    if not receiver:
        return None
    return re.sub(r"\\(.)", r"\1", receiver, flags=re.DOTALL)


def notification_alert(source: str, data: dict, entry: dict, links: list[Link], details: dict) -> Alert:
    """Build the normalized alert from one loaded alert and its notification, in Alertmanager's webhook shape
    (Grafana's extends it)."""
    return Alert(
        source=source,
        status=entry["status"],
        labels=entry["labels"],
        annotations=entry["annotations"],
        starts_at=entry["starts_at"],
        ends_at=entry["ends_at"],
        fingerprint=entry["fingerprint"] or None,
        group_key=data["group_key"] or None,
        links=links,
        details=details,
        receiver=unquote_receiver(data["receiver"]),
        external_url=data["external_url"] or None,
        route_labels=data["route_labels"],
    )
