"""The HTTP surface. Route modules call the pipeline and the services; nothing imports them."""
