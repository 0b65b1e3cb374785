"""Delivery: the worker that moves rows from the outbox to PagerDuty, and its supervision."""
