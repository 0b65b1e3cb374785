"""Start-up: reading the settings as people write them, refusing bad ones in one line, and saying what the
process will do."""
