"""The one markdown renderer: model, tool and user text in, safe HTML out.

markdown-it-py (CommonMark + tables + strikethrough + `$math$`) with pygments highlighting; math
becomes `<span class="math">`/`<div class="math">` holding escaped TeX that KaTeX renders in the
browser. Every result goes through nh3 with an allowlist, so nothing a model, a tool or a user
wrote can add a script, an event handler or a foreign-origin link without `rel="noopener nofollow"`.

Citations of the conversation's files (`[report.pdf, p. 3]`, `[deck.pptx, slide 2]`) become links when
the caller passes `cite`, a function from (file name, anchor text) to the link, or None for a name that
is not one of the conversation's files; code spans and blocks are never touched.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="")

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "class", "target"},
    "code": {"class"},
    "div": {"class"},
    "pre": {"class", "data-lang", "data-title"},
    "span": {"class"},
    "td": {"style"},
    "th": {"style"},
    "ol": {"start"},
}
# Table alignment is the only inline style markdown produces; keep it and nothing else.
_ALIGN_STYLES = {"text-align:left", "text-align:right", "text-align:center"}


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr == "target":
        return value if value == "_blank" else None
    if attr == "style":
        return value if value.replace(" ", "") in _ALIGN_STYLES else None
    if attr == "class":
        # Only our own classes (pygments tokens are short, math and language markers are prefixed).
        kept = [c for c in value.split() if len(c) <= 24 and c.replace("-", "").replace("_", "").isalnum()]
        return " ".join(kept) or None
    return value


def sanitize(fragment: str) -> str:
    """Clean HTML with the allowlist; links get `rel="noopener nofollow"`."""
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener nofollow",
        strip_comments=True,
    )


def _highlight(code: str, lang: str, _attrs) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return html.escape(code)
    return highlight(code, lexer, _FORMATTER)


def _math_inline(self, tokens, idx, options, env) -> str:
    return f'<span class="math math-inline">{html.escape(tokens[idx].content)}</span>'


def _math_inline_display(self, tokens, idx, options, env) -> str:
    return f'<span class="math math-display">{html.escape(tokens[idx].content)}</span>'


def _math_block(self, tokens, idx, options, env) -> str:
    return f'<div class="math math-display">{html.escape(tokens[idx].content)}</div>\n'


# An artifact's name in a fence's info string: ```jsx title="Todo app"``` (or title=todo-app).
_FENCE_TITLE = re.compile(r"""\btitle=(?:"([^"]{1,80})"|'([^']{1,80})'|(\S{1,80}))""")


def _fence(self, tokens, idx, options, env) -> str:
    out = RendererHTML.fence(self, tokens, idx, options, env)
    found = _FENCE_TITLE.search(tokens[idx].info or "")
    if found:
        title = next(g for g in found.groups() if g)
        out = out.replace("<pre", f'<pre data-title="{html.escape(title)}"', 1)
    return out


# (file name, anchor text such as "p. 3") -> the link, or None when the name is no file of this chat.
CiteResolver = Callable[[str, str], str | None]
_CITATION_MAX = 300


def _resolve(cite: CiteResolver, body: str) -> str | None:
    """The link for one `name, anchor` (the name may itself hold commas), or None."""
    for i in [i for i, c in enumerate(body) if c == ","] + [len(body)]:
        href = cite(body[:i].strip(), body[i + 1 :].strip())
        if href is not None:
            return href
    return None


def _citation(state, silent: bool) -> bool:
    """`[name, anchor]` (or `[name]`, or several joined by `;`) naming files of the conversation, not
    followed by `(` or `[` (that would be a markdown link): a link to each file at its anchor."""
    cite = state.env.get("cite") if isinstance(state.env, dict) else None
    src, start = state.src, state.pos
    if cite is None or src[start] != "[":
        return False
    end = src.find("]", start + 1, min(state.posMax, start + _CITATION_MAX))
    if end < 0:
        return False
    body = src[start + 1 : end]
    if not body.strip() or "[" in body or "\n" in body or src[end + 1 : end + 2] in ("(", "["):
        return False
    pieces = [p.strip() for p in body.split(";")]
    links = [(p, _resolve(cite, p)) for p in pieces] if len(pieces) > 1 else []
    if not links or any(href is None for _, href in links):
        href = _resolve(cite, body)
        if href is None:
            return False
        links = [(body, href)]
    if not silent:
        for n, (text, href) in enumerate(links):
            if len(links) > 1:
                piece = state.push("text", "", 0)
                piece.content = "[" if n == 0 else "; "
            link = state.push("link_open", "a", 1)
            link.attrs = {"href": href, "class": "cite", "target": "_blank"}
            inner = state.push("text", "", 0)
            inner.content = text if len(links) > 1 else f"[{text}]"
            state.push("link_close", "a", -1)
        if len(links) > 1:
            state.push("text", "", 0).content = "]"
    state.pos = end + 1
    return True


def _build() -> MarkdownIt:
    md = (
        MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
        .enable(["table", "strikethrough"])
        .use(dollarmath_plugin, allow_space=False, double_inline=True)
    )
    md.add_render_rule("math_inline", _math_inline)
    md.add_render_rule("math_inline_double", _math_inline_display)
    md.add_render_rule("math_block", _math_block)
    md.add_render_rule("math_block_label", _math_block)
    md.add_render_rule("fence", _fence)
    md.inline.ruler.before("link", "citation", _citation)
    return md


_MD = _build()


def render_markdown(text: str, cite: CiteResolver | None = None) -> str:
    """Markdown → sanitized HTML (raw HTML in the source is shown as text, then everything is cleaned);
    with `cite`, citations of the conversation's files become links."""
    if not text:
        return ""
    return sanitize(_MD.render(text, {"cite": cite} if cite is not None else {}))


def render_plain(text: str) -> str:
    """Plain text → escaped HTML; newlines are kept by CSS (`white-space: pre-wrap`)."""
    return html.escape(text or "", quote=False)


def pygments_css() -> str:
    """The highlight stylesheet (light; dark for the dark theme and for a dark system theme)."""
    light = HtmlFormatter(style="friendly", classprefix="").get_style_defs(".md pre")
    dark = HtmlFormatter(style="monokai", classprefix="").get_style_defs('[data-theme="dark"] .md pre')
    system = HtmlFormatter(style="monokai", classprefix="").get_style_defs('[data-theme="system"] .md pre')
    return f"{light}\n{dark}\n@media (prefers-color-scheme: dark) {{\n{system}\n}}\n"
