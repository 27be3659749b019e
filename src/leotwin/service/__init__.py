"""The leotwin REST service (FastAPI): ``create_app(settings)``; ``leotwin serve`` runs it.

Routes live under ``/api`` (one router per resource in :mod:`leotwin.service.routers`); the
dashboard's built files are served at ``/`` from ``static/`` when present.
"""

from .app import create_app

__all__ = ["create_app"]
