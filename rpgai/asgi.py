"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rpgai.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime.auth import JWTAuthMiddleware  # noqa: E402
from realtime.backpressure import WriteGates  # noqa: E402
from realtime.origins import OriginCheck  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from rpgai.body_limit import RequestBodyLimit  # noqa: E402
from rpgai.db_outage import WebSocketDatabaseOutage  # noqa: E402
from rpgai.log_filters import install_query_free_access_log  # noqa: E402

# WebSocket URLs carry `?token=`: daphne's access log must print paths without queries.
install_query_free_access_log()

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(django_asgi_app),
        # An Origin that may not use the session cookie is refused (4403) before anything
        # else (realtime.origins: scheme, host and port; a token socket may come from any
        # origin); then the session cookie, then `?token=<JWT access>` (which wins when
        # present, and refuses when bad). A database outage while loading the user closes
        # with 4503 (try again) instead of a 500. Outermost, where daphne's own `send`
        # still arrives: each socket's write gate (realtime.backpressure).
        "websocket": WriteGates(
            OriginCheck(
                WebSocketDatabaseOutage(
                    AuthMiddlewareStack(JWTAuthMiddleware(URLRouter(websocket_urlpatterns)))
                )
            )
        ),
    }
)
