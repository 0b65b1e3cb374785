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
