"""tests.witness."""
