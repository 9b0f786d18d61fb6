/* kimiweb artifacts: the first script of every artifact document. It reports what the artifact's
 * author needs to see (syntax and runtime errors with their line, blocked loads) to the chat page's
 * panel by postMessage, or, where the document runs on its own (a download, a new tab), in a bar at
 * the bottom of the page. It holds nothing secret: the artifact can read and call all of it. */
(function () {
  "use strict";
  var framed = window.parent !== window;
  var reported = 0;

  function post(message) {
    message.kimiweb_artifact = 1;
    if (framed) window.parent.postMessage(message, "*");
  }

  function showInPage(message) {
    var show = function () {
      var bar = document.createElement("pre");
      bar.setAttribute("data-artifact-error", "");
      bar.style.cssText = "position:fixed;left:0;right:0;bottom:0;margin:0;padding:8px 12px;z-index:2147483647;" +
        "background:#fee;color:#900;font:12px/1.4 ui-monospace,monospace;white-space:pre-wrap;border-top:1px solid #e99";
      bar.textContent = message.message + (message.line ? " (line " + message.line + ")" : "");
      document.body.appendChild(bar);
    };
    if (document.body) show(); else document.addEventListener("DOMContentLoaded", show);
  }

  function report(error) {
    if (reported++ > 20) return;  // a render loop that throws forever must not flood the panel
    var message = {
      type: "error",
      message: String(error.message || "Error").slice(0, 2000),
      line: error.line || null,
      column: error.column || null,
    };
    if (framed) post(message); else showInPage(message);
  }

  // Line and column of an Error from its stack: the React module is named artifact.tsx.
  function lineOf(error) {
    var m = /artifact\.tsx:(\d+):(\d+)/.exec((error && error.stack) || "");
    return m ? { line: parseInt(m[1], 10), column: parseInt(m[2], 10) } : {};
  }

  function reportError(error) {
    var at = lineOf(error);
    report({ message: (error && error.name ? error.name + ": " : "") + (error && error.message || String(error)),
      line: at.line, column: at.column });
  }

  window.addEventListener("error", function (evt) {
    var el = evt.target;
    if (el && el !== window && (el.src || el.href)) {
      report({ message: "Could not load " + (el.src || el.href) + " (artifacts run without network)" });
      return;
    }
    var at = evt.error ? lineOf(evt.error) : {};
    report({ message: evt.message || "Script error", line: at.line || evt.lineno, column: at.column || evt.colno });
  }, true);

  window.addEventListener("unhandledrejection", function (evt) {
    var reason = evt.reason;
    reportError(reason instanceof Error ? reason : new Error(String(reason)));
  });

  document.addEventListener("securitypolicyviolation", function (evt) {
    var what = evt.effectiveDirective || evt.violatedDirective || "";
    if (/^(script|style)-src/.test(what) && evt.blockedURI && /^https?:/.test(evt.blockedURI)) {
      report({ message: "Blocked " + evt.blockedURI + ": artifacts run offline, with only the bundled libraries" });
    }
  });

  var done = false;
  function rendered() {
    if (done) return;
    done = true;
    post({ type: "rendered" });
  }

  window.addEventListener("load", function () {
    if (!document.getElementById("artifact-source")) rendered();
  });

  // lucide-react's UMD build looks React up as `react`.
  if (!("react" in window)) {
    Object.defineProperty(window, "react", { get: function () { return window.React; }, configurable: true });
  }

  window.KimiArtifactBridge = { report: report, reportError: reportError, rendered: rendered };
})();
