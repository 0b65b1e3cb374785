"""The normalized alert: what every source maps its payload into, before routing."""
from dataclasses import dataclass, field

FIRING = "firing"
RESOLVED = "resolved"


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
