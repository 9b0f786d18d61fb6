"""The conversation socket: owner-only; joins the conversation's group and forwards turn events."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agent.events import group_name

from .models import Conversation


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        uuid = self.scope["url_route"]["kwargs"]["conversation_uuid"]
        if user is None or not user.is_authenticated or not await self._owns(user, uuid):
            await self.close(code=4404)
            return
        self.group = group_name(uuid)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def turn_event(self, message):
        await self.send_json(message["event"])

    @database_sync_to_async
    def _owns(self, user, uuid):
        return Conversation.objects.filter(uuid=uuid, owner=user).exists()
