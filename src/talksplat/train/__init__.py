"""Training loops and their configuration."""
