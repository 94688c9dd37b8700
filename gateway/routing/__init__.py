"""Routing: pick a deployment of a model, retry, fall back."""
