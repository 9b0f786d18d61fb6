"""Forms that validate what the chat page and the socket receive."""

from django import forms
from django.conf import settings


class MessageForm(forms.Form):
    """A message to send (from the composer over HTTP or the WebSocket)."""

    text = forms.CharField(strip=True, error_messages={"required": "Write a message first."})
    thinking = forms.BooleanField(required=False)

    def clean_text(self):
        text = self.cleaned_data["text"]
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise forms.ValidationError(
                f"That message is {len(text):,} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS:,}."
            )
        return text


class RenameForm(forms.Form):
    title = forms.CharField(max_length=200, strip=True)


class PreferenceForm(forms.Form):
    long_thinking = forms.BooleanField(required=False)
    theme = forms.ChoiceField(
        choices=[("system", "System"), ("light", "Light"), ("dark", "Dark")], required=False
    )


def first_error(form: forms.Form) -> str:
    for errors in form.errors.values():
        return str(errors[0])
    return "That did not work."
