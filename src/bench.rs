//! Load generators for `switchboard bench` (filled in with the ingest benchmark).
