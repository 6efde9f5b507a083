"""The request log: one record per request in the state database, searchable by `logs`."""
