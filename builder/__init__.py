"""Hermetic reproducible builds: recipes, sources, build image, Docker sandbox, manifests."""
