"""tests.witness.consensus."""
