"""build-swarm's shared package: models, configuration, logging, errors and the CLI."""

__version__ = "0.1.0"
