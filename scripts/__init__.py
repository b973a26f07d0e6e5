"""Developer tooling run from the repository root (`make lock`); never part of the image."""
