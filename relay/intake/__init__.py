"""Intake: what monitoring tools send, read into normalized alerts and planned into PagerDuty events."""
