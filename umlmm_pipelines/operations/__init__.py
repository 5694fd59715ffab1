"""Keeping the system honest and observable: sensors, health, metrics, CLI."""
