/* kimiweb chat page: the small part htmx cannot do.
 * Resume streams from the last seq seen on every (re)connect; collapse the thinking panel when the
 * answer starts; KaTeX for math; copy buttons; Enter to send; keyboard shortcuts; theme toggle;
 * mobile sidebar. No inline scripts anywhere (the CSP forbids them). */
(function () {
  "use strict";

  var RUNNING = '.turn-foot[data-status="running"], .turn-foot[data-status="queued"]';

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  /* ---- streaming ---------------------------------------------------------------------------- */

  // On every socket open (first connect, reconnect, second tab) ask the server for what we missed.
  document.addEventListener("htmx:wsOpen", function (evt) {
    var socket = evt.detail.socketWrapper;
    var sent = 0;
    $all(RUNNING).forEach(function (foot) {
      var turn = foot.getAttribute("data-turn");
      var marker = document.getElementById("seq-" + turn);
      var after = marker ? parseInt(marker.getAttribute("data-seq") || "0", 10) : 0;
      socket.send(JSON.stringify({ action: "resume", turn: turn, after: after }));
      sent++;
    });
    if (!sent) socket.send(JSON.stringify({ action: "resume" }));
    document.body.classList.remove("offline");
  });

  var SOCKET_CLOSED = {
    4400: "This page is out of date: reload it.",
    4404: "This chat is not available (deleted, or you were logged out): reload the page.",
  };
  document.addEventListener("htmx:wsClose", function (evt) {
    document.body.classList.add("offline");
    // 4xxx: the server closed the socket on purpose; say why (Daphne sends no close reason, so the
    // codes are named here: chat/consumers.py).
    var close = evt.detail && evt.detail.event;
    var error = $("#composer-error");
    if (close && close.code >= 4000 && close.code < 5000 && error) {
      error.textContent = close.reason || SOCKET_CLOSED[close.code] ||
        "The connection was closed (code " + close.code + "); reload the page.";
      error.hidden = false;
    }
  });

  var stickToBottom = true;
  function scroller() { return document.getElementById("scroller"); }
  document.addEventListener("scroll", function (evt) {
    var s = scroller();
    if (evt.target === s) stickToBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }, true);

  function afterContent(root) {
    // The answer started: fold the thinking away (once; the user may open it again).
    $all("summary[data-collapse]", root).forEach(function (sum) {
      sum.removeAttribute("data-collapse");
      var details = sum.parentElement;
      if (details && details.open) details.open = false;
    });
    renderMath(root);
    addCodeCopyButtons(root);
    syncRunning();
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    afterContent(document);
    var s = scroller();
    if (s && stickToBottom) s.scrollTop = s.scrollHeight;
  });

  document.addEventListener("htmx:wsAfterSend", function (evt) {
    var form = evt.target && evt.target.closest ? evt.target.closest("form") : null;
    if (form && form.id === "composer") {
      var text = $("#composer-text");
      text.value = "";
      autoGrow(text);
      stickToBottom = true;
    }
  });

  function syncRunning() {
    // Screen readers announce a streamed answer once, when it stops being busy.
    $all('.answer[aria-busy="true"]').forEach(function (answer) {
      var foot = document.getElementById("status-" + answer.id.slice("answer-".length));
      var status = foot ? foot.getAttribute("data-status") : "done";
      if (status !== "running" && status !== "queued") answer.setAttribute("aria-busy", "false");
    });
    var running = !!$(RUNNING);
    document.body.classList.toggle("is-running", running);
    var live = document.getElementById("live-status");
    if (live) {
      var state = running ? "Answer in progress" : "";
      if (!running && document.body.dataset.wasRunning === "1") state = "Answer complete";
      if (live.textContent !== state) live.textContent = state;
    }
    document.body.dataset.wasRunning = running ? "1" : "0";
  }

  /* ---- math and code ------------------------------------------------------------------------ */

  function renderMath(root) {
    if (!window.katex) return;
    $all(".math:not([data-done])", root).forEach(function (el) {
      el.setAttribute("data-done", "1");
      try {
        window.katex.render(el.textContent, el, {
          displayMode: el.classList.contains("math-display"), throwOnError: false, trust: false,
        });
      } catch (e) { /* leave the TeX source visible */ }
    });
  }

  function addCodeCopyButtons(root) {
    $all(".md pre:not([data-copy])", root).forEach(function (pre) {
      pre.setAttribute("data-copy", "1");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "code-copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      pre.appendChild(button);
    });
  }

  function copyText(text, button) {
    var done = function () {
      if (!button) return;
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else { fallbackCopy(text); done(); }
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    area.remove();
  }

  /* ---- clicks ------------------------------------------------------------------------------- */

  document.addEventListener("click", function (evt) {
    var el = evt.target.closest("button, [data-action]");
    if (!el) return;
    if (el.classList.contains("code-copy")) {
      var code = el.parentElement.querySelector("code") || el.parentElement;
      copyText(code.innerText.replace(/Copy$/, ""), el);
    } else if (el.hasAttribute("data-copy-target")) {
      var target = document.getElementById(el.getAttribute("data-copy-target"));
      var bubble = target && (target.querySelector(".bubble") || target);
      if (bubble) copyText(bubble.innerText, el);
    } else if (el.hasAttribute("data-copy-value")) {
      copyText(el.getAttribute("data-copy-value"), el);
    }
    var action = el.getAttribute("data-action");
    if (action === "edit" || action === "edit-cancel") {
      var form = document.getElementById(el.getAttribute("data-target"));
      if (form) {
        form.hidden = action === "edit-cancel";
        form.previousElementSibling.hidden = action === "edit";
        if (action === "edit") form.querySelector("textarea").focus();
      }
    } else if (action === "toggle-sidebar") {
      document.body.classList.toggle("sidebar-open");
    } else if (action === "close-sidebar") {
      document.body.classList.remove("sidebar-open");
    } else if (action === "cycle-theme") {
      cycleTheme(el);
    }
  });

  /* ---- theme -------------------------------------------------------------------------------- */

  function cycleTheme(button) {
    var order = ["system", "light", "dark"];
    var html = document.documentElement;
    var next = order[(order.indexOf(html.getAttribute("data-theme") || "system") + 1) % order.length];
    html.setAttribute("data-theme", next);
    button.setAttribute("aria-label", "Theme: " + next);
    var body = new URLSearchParams({ theme: next });
    fetch(document.body.getAttribute("data-preferences-url"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    });
  }

  /* ---- composer ----------------------------------------------------------------------------- */

  function autoGrow(area) {
    area.style.height = "auto";
    area.style.height = Math.min(area.scrollHeight, 240) + "px";
  }

  document.addEventListener("input", function (evt) {
    if (evt.target.id === "composer-text") autoGrow(evt.target);
  });

  document.addEventListener("keydown", function (evt) {
    var t = evt.target;
    var typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.isContentEditable);
    if (t && t.id === "composer-text" && evt.key === "Enter" && !evt.shiftKey && !evt.isComposing) {
      evt.preventDefault();
      if (t.value.trim() && !document.body.classList.contains("is-running")) t.form.requestSubmit();
      return;
    }
    if ((evt.ctrlKey || evt.metaKey) && evt.shiftKey && (evt.key === "o" || evt.key === "O")) {
      evt.preventDefault();
      window.location.href = "/";
    } else if (evt.key === "Escape" && document.body.classList.contains("is-running")) {
      var stop = $("#stop-form");
      if (stop) { evt.preventDefault(); stop.requestSubmit(); }
    } else if (evt.key === "/" && !typing) {
      var text = $("#composer-text");
      if (text) { evt.preventDefault(); text.focus(); }
    } else if (evt.key === "Escape") {
      document.body.classList.remove("sidebar-open");
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    afterContent(document);
    var s = scroller();
    if (s) s.scrollTop = s.scrollHeight;
    var text = $("#composer-text");
    if (text) autoGrow(text);
  });
})();
