"""tests.protocol."""
