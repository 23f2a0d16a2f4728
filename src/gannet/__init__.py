"""Gannet: a reliable, TCP-grade transport over UDP."""

__version__ = "0.1.0"
