"""Protocol adapters at the edge: each client protocol validated, counted and encoded."""
