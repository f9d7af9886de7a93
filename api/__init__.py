"""The REST API of the payout engine (FastAPI): ``create_app(service)``; see docs/api.md."""

from api.app import create_app

__all__ = ["create_app"]
