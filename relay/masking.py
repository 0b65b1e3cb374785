"""Masking of secrets (routing keys, tokens) before they reach any output."""


def mask(secret: str | None) -> str:
    """Return a form of the secret safe to show: its last four characters."""
    if not secret:
        return ""
    if len(secret) <= 8:
        return "…"  # too short to show any part without giving most of it away
    return "…" + secret[-4:]


def redact(text: str | None, *secrets: str | None) -> str | None:
    """Replace every occurrence of each secret in text by its masked form."""
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask(secret))
    return text


def redact_value(value, *secrets):
    """Redact secrets from every string inside nested objects and arrays (keys included)."""
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, list):
        return [redact_value(item, *secrets) for item in value]
    if isinstance(value, dict):
        return {redact_value(key, *secrets): redact_value(item, *secrets) for key, item in value.items()}
    return value
