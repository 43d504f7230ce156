"""Corpora: one row schema, readers for every format, the embedded benchmark."""
