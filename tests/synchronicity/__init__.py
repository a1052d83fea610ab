"""tests.synchronicity."""
