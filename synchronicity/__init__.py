"""The ``synchronicity`` command line and the local network launcher (glue only)."""
