"""Providers: where a request finally goes. Each speaks OpenAI-shaped dicts in and out."""
