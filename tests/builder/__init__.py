"""tests.builder."""
