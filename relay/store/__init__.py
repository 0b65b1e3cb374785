"""The store: incident_log (the log and the outbox), its rules, and the database-specific backends."""
