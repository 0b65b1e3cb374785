"""PagerDuty's Events API v2: the event contract, the client that sends events, the retry rule."""
