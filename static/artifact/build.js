/* kimiweb artifacts: one builder for the document an artifact runs as.
 * The runtime page (sandboxed, opaque origin) builds it with <script src> tags to the vendored
 * libraries; the chat page builds the same document with those scripts inlined for a download that
 * renders offline. Every document starts with the bridge (static/artifact/bridge.js), which reports
 * errors to the chat page's panel. Loaded as a classic script; defines window.KimiArtifact. */
(function () {
  "use strict";

  var KINDS = {
    html: [],
    svg: [],
    react: ["tailwind", "react", "react-dom", "prop-types", "recharts", "lucide-react", "babel", "react-boot"],
    mermaid: ["mermaid", "mermaid-boot"],
  };

  function requiredAssets(kind) {
    return ["bridge"].concat(KINDS[kind] || []);
  }

  // Text inside <script>…</script> must not close the element or open an HTML comment.
  function scriptText(text) {
    return String(text).replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");
  }

  function sourceTag(code) {
    var json = JSON.stringify(String(code)).replace(/</g, "\\u003c").replace(/>/g, "\\u003e");
    return '<script type="application/json" id="artifact-source">' + json + "</script>";
  }

  // Put the bridge before anything the artifact runs, on the first line so the artifact's own line
  // numbers stay what the model wrote.
  function withBridge(html, bridge) {
    var doctype = /^\s*<!doctype[^>]*>/i.exec(html);
    if (doctype) return doctype[0] + bridge + html.slice(doctype[0].length);
    return bridge + html;
  }

  function isDocument(code) {
    return /^\s*(<!doctype\s+html|<html[\s>])/i.test(code);
  }

  function page(title, head, body) {
    return '<!doctype html><html lang="en"><head><meta charset="utf-8">' +
      '<meta name="viewport" content="width=device-width, initial-scale=1">' +
      "<title>" + escapeHtml(title || "Artifact") + "</title>" + head + "</head><body>" + body + "</body></html>";
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  var BASE_STYLE = "<style>html,body{margin:0}body{font-family:system-ui,sans-serif}</style>";
  var CENTER_STYLE = "<style>html,body{margin:0;height:100%}body{display:grid;place-items:center;" +
    "font-family:system-ui,sans-serif}body>svg{max-width:100%;max-height:100vh;height:auto}</style>";

  /* artifact: {kind, code, title}; tag(name) -> the <script> element text for a vendored asset. */
  function buildDocument(artifact, tag) {
    var kind = artifact.kind;
    var code = String(artifact.code || "");
    var bridge = tag("bridge");
    if (kind === "html") {
      if (isDocument(code)) return withBridge(code, bridge);
      return withBridge("<!doctype html>" + code, bridge + '<meta charset="utf-8">' + BASE_STYLE);
    }
    if (kind === "svg") return page(artifact.title, bridge + CENTER_STYLE, code);
    if (kind === "react") {
      var libs = KINDS.react.map(tag).join("");
      return page(artifact.title, bridge + BASE_STYLE, '<div id="root"></div>' + sourceTag(code) + libs);
    }
    if (kind === "mermaid") {
      var head = bridge + CENTER_STYLE;
      return page(artifact.title, head, '<div id="diagram"></div>' + sourceTag(code) + KINDS.mermaid.map(tag).join(""));
    }
    throw new Error("Unknown artifact kind: " + kind);
  }

  function srcTag(urls) {
    return function (name) { return '<script src="' + escapeHtml(urls[name]) + '"></script>'; };
  }

  function inlineTag(texts) {
    return function (name) { return "<script>" + scriptText(texts[name]) + "</script>"; };
  }

  window.KimiArtifact = {
    KINDS: Object.keys(KINDS),
    requiredAssets: requiredAssets,
    buildDocument: buildDocument,
    srcTag: srcTag,
    inlineTag: inlineTag,
  };
})();
