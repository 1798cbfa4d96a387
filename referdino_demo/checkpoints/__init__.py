"""Checkpoints: converting the official release format, and finding files (Hub, local, tiny-random)."""
