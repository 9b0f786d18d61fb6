"""WebSocket routes."""

from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_uuid>/", consumers.ConversationConsumer.as_asgi()),
]
