"""ASGI entry point: HTTP goes to Django, WebSockets to Channels consumers.

Sockets need a session and an Origin of this very site (scheme, host and port).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier  # noqa: E402
from django.urls import re_path  # noqa: E402

from chat.middleware import SameOriginWebSocketValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            SameOriginWebSocketValidator(
                # Any other socket path is refused (403), not a "No route found" 500.
                AuthMiddlewareStack(
                    URLRouter([*websocket_urlpatterns, re_path(r"", WebsocketDenier.as_asgi())])
                )
            )
        ),
    }
)
