"""The web layer: the FastAPI app (routes, error mapping, metrics, logs) and the review pages."""
