"""tests.logserver."""
