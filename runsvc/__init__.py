"""runsvc: a self-hosted run service on Trio."""

__version__ = "0.1.0"
