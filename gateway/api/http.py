"""What route modules share: the services handle and the JSON and error answers."""

from gateway.web.context import services
from gateway.web.responses import error_response, json_response

__all__ = ["error_response", "json_response", "services"]
