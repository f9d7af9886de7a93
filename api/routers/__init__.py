"""API routers: miners (public), operators (bearer tokens), musig2 (signing), system."""
