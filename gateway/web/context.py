"""The app's services, as a route finds them (`create_app` puts them on `app.state`)."""

from __future__ import annotations

from starlette.requests import Request

from gateway.services import Services


def services(request: Request) -> Services:
    return request.app.state.services
