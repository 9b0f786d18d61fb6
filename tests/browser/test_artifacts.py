"""Artifacts in a real browser: code blocks of an answer render in the sandboxed panel, and attack
artifacts cannot reach the app (its cookies, storage, DOM, API, top window) or spoof its messages."""

from __future__ import annotations

import json

import httpx
import pytest
from chat_fixtures import make_conversation, make_finished_turn
from conftest import log_in
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FENCE = "`" * 3

HTML = """<!doctype html>
<html><body><p id="out">static</p>
<script>document.getElementById("out").textContent = "from script";</script>
</body></html>"""

REACT = """import { useState } from "react";
import { LineChart, Line } from "recharts";
import { Check } from "lucide-react";

export default function Counter() {
  const [n, setN] = useState(0);
  return (
    <div className="p-4">
      <button onClick={() => setN(n + 1)}>count {n}</button>
      <Check />
      <LineChart width={240} height={120} data={[{ v: 1 }, { v: 3 }, { v: 2 }]}>
        <Line dataKey="v" />
      </LineChart>
    </div>
  );
}"""

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle id="dot" cx="50" cy="50" r="40"/></svg>'
MERMAID = "graph TD\n  A[Start] --> B[Finish]"
BROKEN_JSX = "export default function App() {\n  return <div>\n    <p>hi</div>;\n}"

ATTACK = """<script>
const r = {};
try { r.cookie = document.cookie; } catch (e) { r.cookie = "blocked"; }
try { r.storage = localStorage.length; } catch (e) { r.storage = "blocked"; }
try { r.parent = parent.document.title; } catch (e) { r.parent = "blocked"; }
try { top.location = "about:blank#pwned"; r.top = "navigated"; } catch (e) { r.top = "blocked"; }
r.popup = window.open("about:blank") ? "opened" : "blocked";
parent.postMessage({ kimiweb_artifact: 1, type: "render", artifact: { kind: "html", code: "x" } }, "*");
parent.postMessage({ kimiweb_artifact: 1, type: "ready" }, "*");
Promise.all([APP_API, INFERENCE].map((u) => fetch(u, { credentials: "include" }).then(() => "reached", () => "blocked")))
  .then(([app, inference]) => { r.app = app; r.inference = inference; document.documentElement.dataset.result = JSON.stringify(r); });
</script>"""


def answer_with(lang, code):
    return f"Here it is:\n\n{FENCE}{lang}\n{code}\n{FENCE}\n"


def open_conversation(page, live_url, user, answer):
    conv = make_conversation(user)
    make_finished_turn(conv, question="Make me something", answer=answer)
    log_in(page, live_url, user)
    page.goto(f"{live_url}/c/{conv.uuid}/")
    return conv


def preview(page):
    page.locator(".answer .artifact-preview").first.click()
    frame_el = page.locator("#artifact-panel iframe")
    expect(frame_el).to_have_attribute("sandbox", "allow-scripts")
    return page.frame_locator("#artifact-panel iframe")


def test_html_artifact_runs_its_script_in_the_panel(live_url, new_page, user, page_errors):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("html", HTML))
    frame = preview(page)
    expect(frame.locator("#out")).to_have_text("from script")


def test_svg_artifact_renders(live_url, new_page, user):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("svg", SVG))
    expect(preview(page).locator("#dot")).to_be_attached()


def test_react_artifact_keeps_state_and_draws_a_vendored_chart(live_url, new_page, user):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("jsx", REACT))
    frame = preview(page)
    button = frame.locator("button")
    expect(button).to_have_text("count 0", timeout=20_000)
    button.click()
    expect(button).to_have_text("count 1")
    expect(frame.locator(".recharts-line")).to_be_attached()
    expect(frame.locator("svg.lucide-check")).to_be_attached()


def test_mermaid_artifact_renders_a_diagram(live_url, new_page, user):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("mermaid", MERMAID))
    expect(preview(page).locator("#diagram svg")).to_contain_text("Finish", timeout=20_000)


def test_jsx_syntax_error_shows_its_line_and_fix_this(live_url, new_page, user):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("jsx", BROKEN_JSX))
    preview(page)
    error = page.locator("#artifact-panel .artifact-error")
    expect(error).to_be_visible(timeout=20_000)
    expect(error).to_contain_text("(line 3)")
    expect(error.locator("button", has_text="Fix this")).to_be_visible()


def test_attack_artifact_reaches_nothing_of_the_app(live_url, new_page, user):
    page = new_page()
    code = ATTACK.replace("APP_API", json.dumps(live_url + "/conversations/")).replace(
        "INFERENCE", json.dumps("http://127.0.0.1:30000/v1/models")
    )
    open_conversation(page, live_url, user, answer_with("html", code))
    page.evaluate("localStorage.setItem('secret', 'x')")
    frame = preview(page)
    expect(frame.locator("html[data-result]")).to_be_attached(timeout=10_000)
    result = json.loads(frame.locator("html").get_attribute("data-result"))
    assert result == {
        "cookie": "blocked",
        "storage": "blocked",
        "parent": "blocked",
        "top": "blocked",
        "popup": "blocked",
        "app": "blocked",
        "inference": "blocked",
    }
    assert "#pwned" not in page.url
    # The spoofed "render"/"ready" messages changed nothing: the panel still runs the same frame.
    expect(page.locator("#artifact-panel iframe")).to_have_count(1)
    assert len(page.context.pages) == 1


def test_app_page_csp_is_unchanged_and_the_runtime_is_sandboxed(live_url, user, db_write):
    app = httpx.get(live_url + "/accounts/login/").headers["content-security-policy"]
    assert "unsafe-inline" not in app.split("script-src")[1].split(";")[0]
    assert "unsafe-eval" not in app
    assert "script-src 'self';" in app
    runtime = httpx.get(live_url + "/artifact/runtime/")
    policy = runtime.headers["content-security-policy"]
    assert "sandbox allow-scripts" in policy
    assert "connect-src 'none'" in policy
    assert "set-cookie" not in runtime.headers


def test_the_same_artifact_in_a_later_answer_is_a_new_version(live_url, new_page, user):
    page = new_page()
    conv = open_conversation(page, live_url, user, answer_with("svg", SVG))
    make_finished_turn(
        conv, question="Make it red", answer=answer_with("svg", SVG.replace("<circle", '<circle fill="red"'))
    )
    page.reload()
    page.locator(".answer .artifact-preview").first.click()
    select = page.locator("#artifact-panel .artifact-version")
    expect(select.locator("option")).to_have_count(2)
    frame = page.frame_locator("#artifact-panel iframe")
    expect(frame.locator("#dot")).not_to_have_attribute("fill", "red")
    select.select_option("1")
    expect(frame.locator("#dot")).to_have_attribute("fill", "red")


def test_download_is_a_file_that_renders_offline(live_url, new_page, user, tmp_path):
    page = new_page()
    open_conversation(page, live_url, user, answer_with("jsx", REACT))
    preview(page)
    with page.expect_download() as info:
        page.locator('#artifact-panel [data-artifact-do="download"]').click()
    path = tmp_path / "artifact.html"
    info.value.save_as(path)
    offline = new_page(offline=True)
    offline.goto(path.as_uri())
    button = offline.locator("button")
    expect(button).to_have_text("count 0", timeout=20_000)
    button.click()
    expect(button).to_have_text("count 1")


TODO_APP = """import { useState } from "react";

export default function TodoApp() {
  const [items, setItems] = useState([]);
  const [text, setText] = useState("");
  const add = () => { if (text.trim()) { setItems([...items, text]); setText(""); } };
  return (
    <div className="p-4">
      <input value={text} onChange={(e) => setText(e.target.value)} placeholder="New task" />
      <button onClick={add}>Add</button>
      <ul>{items.map((item, i) => <li key={i}>{item}</li>)}</ul>
    </div>
  );
}"""


def test_a_streamed_react_todo_app_shows_growing_code_then_runs_beside_the_chat(
    live_url, stack_db, new_page, user, page_errors
):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
    from scripted_model import Reply, ScriptedModelServer
    from test_live_stack import send, start_worker

    reply = Reply(content=answer_with("jsx", TODO_APP) + "\nAdd tasks with the button.", piece=12, delay=0.03)
    with ScriptedModelServer(lambda body, n: reply) as model:
        worker = start_worker(stack_db, model.url)
        try:
            page = new_page()
            log_in(page, live_url, user)
            send(page, live_url, "A to-do app in React, please", thinking=False)
            code = page.locator("#artifact-panel .artifact-code")
            expect(code).to_contain_text("useState", timeout=30_000)  # the code grows while it streams
            frame = page.frame_locator("#artifact-panel iframe")
            expect(frame.locator("input")).to_be_visible(timeout=30_000)
            frame.locator("input").fill("Buy milk")
            frame.locator("button", has_text="Add").click()
            expect(frame.locator("li")).to_have_text("Buy milk")
        finally:
            worker.stop()


def test_a_fence_title_names_the_artifact_across_answers(live_url, new_page, user):
    page = new_page()
    first = answer_with('svg title="Logo"', SVG) + "\n" + answer_with("svg", SVG)
    conv = open_conversation(page, live_url, user, first)
    make_finished_turn(conv, question="Now as HTML", answer=answer_with("html title=Logo", "<p id=v2>v2</p>"))
    page.reload()
    page.locator(".answer .artifact-preview").first.click()
    expect(page.locator("#artifact-panel .artifact-title")).to_have_text("Logo")
    options = page.locator("#artifact-panel .artifact-version option")
    expect(options).to_have_count(2)
    page.locator("#artifact-panel .artifact-version").select_option("1")
    expect(page.frame_locator("#artifact-panel iframe").locator("#v2")).to_have_text("v2")


def test_artifact_origin_host_serves_only_the_runtime_and_never_a_cookie(db_write):
    from django.test import Client, override_settings

    origin = "http://artifacts.localhost:8000"
    with override_settings(ARTIFACT_ORIGIN=origin, ALLOWED_HOSTS=["127.0.0.1", "artifacts.localhost"]):
        client = Client()
        runtime = client.get(
            "/artifact/runtime/", HTTP_HOST="artifacts.localhost:8000", HTTP_COOKIE="sessionid=x"
        )
        assert runtime.status_code == 200
        assert f"script-src {origin}/static/vendor/artifact/" in runtime.headers["Content-Security-Policy"]
        assert not runtime.cookies
        assert client.get("/accounts/login/", HTTP_HOST="artifacts.localhost:8000").status_code == 404
        app = client.get("/accounts/login/", HTTP_HOST="127.0.0.1")
        assert app.headers["Content-Security-Policy"].endswith(f"frame-src 'self' {origin}")
        assert "unsafe-eval" not in app.headers["Content-Security-Policy"]


def test_the_shared_page_runs_artifacts_in_the_same_sandbox(live_url, new_page, user):
    conv = make_conversation(user)
    make_finished_turn(conv, question="Draw a dot", answer=answer_with("svg", SVG))
    conv.share_token = "shared-artifact-token-" + str(conv.pk)
    conv.save(update_fields=["share_token"])
    page = new_page()
    page.goto(f"{live_url}/s/{conv.share_token}/")
    frame = preview(page)
    expect(frame.locator("#dot")).to_be_attached()
    expect(page.locator('#artifact-panel [data-artifact-do="fix"]')).to_be_hidden()
