"""Shared wire formats (OpenAI <-> Anthropic translation)."""
