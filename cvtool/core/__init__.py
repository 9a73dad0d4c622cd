"""The layer everything stands on: errors and exit statuses, records, the run's environment,
files and owned directories, devices. No torch at import."""
