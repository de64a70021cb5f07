"""The root of every error the package raises, so a caller (the CLI's exit codes, the web layer's statuses, a
test) can tell the service's own refusals from a bug in one `except`; each layer's errors derive from it."""

from __future__ import annotations


class HipflexError(Exception):
    """An error hipflex-cds raises on purpose, with a message meant for the person who can fix its cause."""
