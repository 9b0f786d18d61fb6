"""The one markdown renderer: rich enough for answers, and nothing a model writes can run in the page."""

import re

from chat.rendering import render_markdown, render_plain, sanitize

HANDLER_IN_A_TAG = re.compile(r"<[^>]*\son\w+\s*=", re.I)


def test_raw_html_from_the_model_is_shown_as_text_not_markup():
    html = render_markdown(
        'Hi <script>alert(1)</script> <img src=x onerror="alert(2)"> <b onclick="x()">b</b>'
    )
    assert "<script" not in html and "<img" not in html and "<b " not in html
    assert "&lt;script&gt;" in html
    assert not HANDLER_IN_A_TAG.search(html)


def test_the_sanitizer_drops_scripts_handlers_and_foreign_tags():
    html = sanitize(
        '<p onclick="x()">a</p><script>alert(1)</script><iframe src="https://e.org"></iframe><svg onload=1>'
    )
    assert html == "<p>a</p>"


def test_javascript_links_are_not_links_and_real_links_get_noopener_nofollow():
    html = render_markdown("[bad](javascript:alert(1)) [good](https://example.org/a)")
    assert 'href="javascript' not in html
    assert '<a href="https://example.org/a" rel="noopener nofollow">good</a>' in html


def test_code_blocks_are_highlighted_and_escaped():
    html = render_markdown("```python\nif x < 1: print('<b>')\n```")
    assert '<pre><code class="language-python">' in html
    assert '<span class="k">if</span>' in html
    assert "&lt;b&gt;" in html


def test_tables_keep_alignment_and_math_becomes_katex_spans():
    html = render_markdown("| a | b |\n|:-|-:|\n| 1 | 2 |\n\nEnergy $E=mc^2$ and\n\n$$\\int_0^1 x\\,dx$$\n")
    assert '<th style="text-align:left">a</th>' in html
    assert '<span class="math math-inline">E=mc^2</span>' in html
    assert '<div class="math math-display">\\int_0^1 x\\,dx</div>' in html


def test_styles_other_than_table_alignment_are_dropped():
    html = render_markdown("| a |\n|---|\n| 1 |\n")
    assert "style" not in html
    assert "position" not in sanitize('<table><tr><td style="position:fixed">x</td></tr></table>')


def test_plain_text_is_escaped():
    assert render_plain("<script>x</script> & co") == "&lt;script&gt;x&lt;/script&gt; &amp; co"
