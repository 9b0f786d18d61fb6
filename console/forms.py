"""The admin console's forms: the corpus import (files and URLs)."""

from __future__ import annotations

from django import forms
from django.utils.text import Truncator


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)] if data else []


class DocumentImportForm(forms.Form):
    files = MultipleFileField(
        required=False,
        help_text="Text, Markdown or HTML files; each becomes one document (HTML is converted).",
    )
    urls = forms.CharField(
        label="URLs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "placeholder": "https://example.org/page\n…"}),
        help_text="One http(s) URL per line; each page is fetched through the agent's guarded browser.",
    )
    source = forms.CharField(
        required=False,
        max_length=200,
        help_text="A label stored on each imported document (e.g. 'docs-2026').",
    )

    MAX_URLS = 500

    def clean_urls(self):
        lines = [line.strip() for line in self.cleaned_data["urls"].splitlines() if line.strip()]
        validate = forms.URLField(assume_scheme="https").clean
        urls, bad = [], []
        for line in lines:
            try:
                url = validate(line)
            except forms.ValidationError:
                bad.append(line)
                continue
            if not url.lower().startswith(("http://", "https://")):
                bad.append(line)
                continue
            urls.append(url)
        if bad:
            raise forms.ValidationError(
                "Not an http(s) URL: %(bad)s",
                params={"bad": ", ".join(Truncator(b).chars(80) for b in bad[:5])},
            )
        if len(urls) > self.MAX_URLS:
            raise forms.ValidationError(f"At most {self.MAX_URLS} URLs per import.")
        return urls

    def clean(self):
        data = super().clean()
        if not data.get("files") and not data.get("urls") and not self.errors:
            raise forms.ValidationError("Choose files to upload or list URLs to fetch.")
        return data
