/* kimiweb artifacts on the chat page: code blocks of an answer that hold HTML, SVG, a React
 * component or a Mermaid diagram get a Preview button; Preview opens a panel beside the thread that
 * runs the artifact in <iframe sandbox="allow-scripts"> on the runtime page (chat/artifacts.py).
 * The frame is spoken to only by postMessage, and its messages are accepted only when their source
 * is that frame's window (its origin is opaque: "null"). Errors show in the panel with their line and
 * a "Fix this" button that sends them to the model through the composer. */
(function () {
  "use strict";

  var LANGS = { html: "html", htm: "html", xhtml: "html", svg: "svg", jsx: "react", tsx: "react", mermaid: "mermaid", mmd: "mermaid" };
  var panel = null, frame = null, current = null;

  function runtimeUrl() {
    var meta = document.querySelector('meta[name="artifact-runtime"]');
    return meta ? meta.content : "/artifact/runtime/";
  }

  function kindOf(pre) {
    var code = pre.querySelector("code");
    if (!code) return null;
    var m = /language-([\w-]+)/.exec(code.className || "");
    var lang = m ? m[1].toLowerCase() : "";
    var text = code.textContent;
    var kind = LANGS[lang] || null;
    if (!kind && (lang === "js" || lang === "javascript" || lang === "ts" || lang === "typescript") &&
        /export\s+default/.test(text) && /<[A-Za-z]/.test(text)) kind = "react";
    if (!kind && (lang === "xml" || lang === "") && /^\s*<svg[\s>]/i.test(text)) kind = "svg";
    if (kind === "html" && /^\s*<svg[\s>]/i.test(text)) kind = "svg";
    if (kind === "react" && !/export\s+default/.test(text)) return null;
    return kind;
  }

  function addPreviewButtons(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(".answer pre:not([data-artifact])"), function (pre) {
      var kind = kindOf(pre);
      pre.setAttribute("data-artifact", kind || "");
      if (!kind) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "artifact-preview";
      button.textContent = "Preview";
      button.setAttribute("data-artifact-kind", kind);
      pre.appendChild(button);
    });
  }

  function codeOf(pre) { return pre.querySelector("code").textContent; }

  // An artifact is named by the fence's title, else by its kind and order within its answer; the
  // same name in later answers (or a regenerated one) is a newer version of it.
  function keyOf(pre) {
    if (pre.getAttribute("data-title")) return "t:" + pre.getAttribute("data-title");
    var kind = pre.getAttribute("data-artifact");
    var answer = pre.closest(".answer");
    var same = Array.prototype.filter.call(answer.querySelectorAll("pre[data-artifact]"), function (p) {
      return p.getAttribute("data-artifact") === kind;
    });
    return kind + "#" + same.indexOf(pre);
  }

  function versionsOf(key) {
    return Array.prototype.filter.call(document.querySelectorAll(".answer pre[data-artifact]"), function (p) {
      return p.getAttribute("data-artifact") && keyOf(p) === key;
    });
  }

  function buildPanel() {
    panel = document.createElement("aside");
    panel.className = "artifact-panel";
    panel.id = "artifact-panel";
    panel.setAttribute("aria-label", "Artifact");
    panel.innerHTML =
      '<header class="artifact-bar"><strong class="artifact-title"></strong>' +
      '<select class="artifact-version" aria-label="Version"></select>' +
      '<button type="button" data-artifact-tab="preview" aria-pressed="true">Preview</button>' +
      '<button type="button" data-artifact-tab="code" aria-pressed="false">Code</button>' +
      '<button type="button" data-artifact-do="reload">Reload</button>' +
      '<button type="button" data-artifact-do="copy">Copy</button>' +
      '<button type="button" data-artifact-do="download">Download</button>' +
      '<button type="button" data-artifact-do="open">Open</button>' +
      '<button type="button" data-artifact-do="close" aria-label="Close artifact">×</button></header>' +
      '<div class="artifact-error" hidden><pre class="artifact-error-text"></pre>' +
      '<button type="button" data-artifact-do="fix">Fix this</button></div>' +
      '<div class="artifact-stage"></div><pre class="artifact-code" hidden><code></code></pre>';
    document.body.appendChild(panel);
    if (!document.getElementById("composer")) panel.querySelector('[data-artifact-do="fix"]').hidden = true;
    panel.querySelector(".artifact-version").addEventListener("change", function (evt) {
      var versions = versionsOf(current.key);
      var pre = versions[parseInt(evt.target.value, 10)];
      if (pre) open(pre);
    });
  }

  function render() {
    var stage = panel.querySelector(".artifact-stage");
    stage.textContent = "";
    panel.querySelector(".artifact-error").hidden = true;
    frame = document.createElement("iframe");
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.setAttribute("title", "Artifact preview");
    frame.src = runtimeUrl();
    frame.dataset.sent = "";
    stage.appendChild(frame);
  }

  function open(pre) {
    if (!panel) buildPanel();
    current = { kind: pre.getAttribute("data-artifact"), code: codeOf(pre), title: pre.getAttribute("data-title") || "" };
    current.key = keyOf(pre);
    var versions = versionsOf(current.key);
    var select = panel.querySelector(".artifact-version");
    select.textContent = "";
    versions.forEach(function (p, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = "v" + (i + 1);
      option.selected = p === pre;
      select.appendChild(option);
    });
    select.hidden = versions.length < 2;
    panel.querySelector(".artifact-title").textContent = current.title || current.kind;
    panel.querySelector(".artifact-code code").textContent = current.code;
    document.body.classList.add("artifact-open");
    render();
  }

  window.addEventListener("message", function (evt) {
    if (!frame || evt.source !== frame.contentWindow) return;
    var data = evt.data;
    if (!data || typeof data !== "object" || data.kimiweb_artifact !== 1) return;
    if (data.type === "ready" && !frame.dataset.sent) {
      frame.dataset.sent = "1";
      frame.contentWindow.postMessage({ kimiweb_artifact: 1, type: "render", artifact: current }, "*");
    } else if (data.type === "error") {
      var box = panel.querySelector(".artifact-error");
      box.querySelector(".artifact-error-text").textContent =
        String(data.message || "Error").slice(0, 2000) + (data.line ? " (line " + Number(data.line) + ")" : "");
      box.hidden = false;
    }
  });

  document.addEventListener("click", function (evt) {
    var el = evt.target.closest("button");
    if (!el) return;
    if (el.classList.contains("artifact-preview")) { open(el.parentElement); return; }
    if (!panel || !panel.contains(el)) return;
    var tab = el.getAttribute("data-artifact-tab");
    if (tab) {
      panel.querySelector(".artifact-stage").hidden = tab !== "preview";
      panel.querySelector(".artifact-code").hidden = tab !== "code";
      Array.prototype.forEach.call(panel.querySelectorAll("[data-artifact-tab]"), function (b) {
        b.setAttribute("aria-pressed", String(b === el));
      });
    }
    var action = el.getAttribute("data-artifact-do");
    if (action === "reload") render();
    else if (action === "close") document.body.classList.remove("artifact-open");
    else if (action === "copy") navigator.clipboard && navigator.clipboard.writeText(current.code);
    else if (action === "download") download();
    else if (action === "open") {
      var payload = btoa(unescape(encodeURIComponent(JSON.stringify(current))));
      window.open(runtimeUrl() + "#" + payload, "_blank", "noopener");
    } else if (action === "fix") {
      var text = document.getElementById("composer-text");
      var form = document.getElementById("composer");
      if (!text || !form) return;
      text.value = "The artifact fails with this error:\n\n" + panel.querySelector(".artifact-error-text").textContent +
        "\n\nPlease fix it.";
      form.requestSubmit();
    }
  });

  // A self-contained .html: the same document the frame runs, with the vendored scripts inlined.
  function download() {
    var artifact = { kind: current.kind, code: current.code, title: current.title };
    fetch("/artifact/runtime/", { credentials: "omit" }).then(function (r) { return r.text(); }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var urls = JSON.parse(doc.getElementById("artifact-assets").textContent);
      var names = window.KimiArtifact.requiredAssets(artifact.kind);
      return Promise.all(names.map(function (name) {
        return fetch(urls[name]).then(function (r) { return r.text(); });
      })).then(function (texts) {
        var inline = {};
        names.forEach(function (name, i) { inline[name] = texts[i]; });
        var out = window.KimiArtifact.buildDocument(artifact, window.KimiArtifact.inlineTag(inline));
        var link = document.createElement("a");
        link.href = URL.createObjectURL(new Blob([out], { type: "text/html" }));
        link.download = (artifact.title || "artifact").replace(/[^\w.-]+/g, "-") + ".html";
        document.body.appendChild(link);
        link.click();
        link.remove();
        setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { addPreviewButtons(document); });
  // A block is still streaming while its turn runs and nothing follows it in the answer yet.
  function streaming(pre) {
    var turn = pre.closest(".turn");
    var foot = turn && document.getElementById("status-" + turn.getAttribute("data-turn"));
    var status = foot ? foot.getAttribute("data-status") : "done";
    return (status === "running" || status === "queued") && !pre.nextElementSibling;
  }

  // While the model writes an artifact the panel shows its code growing; it renders once the block closes.
  var following = null;
  function followStream() {
    var pres = document.querySelectorAll('.turn:not([data-old]) .answer pre[data-artifact]:not([data-artifact=""])');
    var pre = pres[pres.length - 1];
    if (!pre) return;
    var turnId = pre.closest(".turn").getAttribute("data-turn");
    var id = turnId + "/" + keyOf(pre);
    if (streaming(pre)) {
      if (!panel) buildPanel();
      following = id;
      current = { kind: pre.getAttribute("data-artifact"), code: codeOf(pre), title: "", key: keyOf(pre) };
      panel.querySelector(".artifact-title").textContent = current.kind + " (writing…)";
      panel.querySelector(".artifact-code code").textContent = current.code;
      panel.querySelector(".artifact-stage").hidden = true;
      panel.querySelector(".artifact-code").hidden = false;
      document.body.classList.add("artifact-open");
    } else if (following === id) {
      following = null;
      panel.querySelector(".artifact-stage").hidden = false;
      panel.querySelector(".artifact-code").hidden = true;
      open(pre);
    }
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    addPreviewButtons(document);
    followStream();
  });
})();
