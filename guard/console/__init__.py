"""The compliance console: search, verify and export the audit journal from the admin listener."""
