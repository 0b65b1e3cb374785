"""The HTTP faces: webhooks, the JSON API, the log page, OpenAPI, health, metrics and authentication."""
