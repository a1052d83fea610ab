"""Multi-host deployment: the node container image, compose files and container fault harness."""
