"""Turning user input (frames, expressions) into model tensors exactly as the official scripts do."""
