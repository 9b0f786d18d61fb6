/* kimiweb files in the composer: the paperclip, drag-and-drop onto the composer and paste upload each
 * file on its own request (with a progress bar) and show it as a chip; the server's chip replaces the
 * placeholder, and its status line updates over the socket (and by polling itself until final).
 * A chip's hidden `files` input attaches the file when the message is sent. No inline scripts. */
(function () {
  "use strict";

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  function composer() { return $("#composer"); }
  function tray() { return $("#composer-files"); }

  function humanSize(bytes) {
    var units = ["bytes", "KB", "MB", "GB"];
    var n = bytes, i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toUpperCase().slice(0, 6) : "FILE";
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }

  // A chip for a file that has not reached the server yet: its name, size and a progress bar.
  function placeholder(file) {
    var chip = el("span", "upload-chip is-uploading");
    chip.appendChild(el("span", "chip-kind", extension(file.name)));
    chip.appendChild(el("span", "chip-name", file.name)).title = file.name;
    chip.appendChild(el("span", "chip-size", humanSize(file.size)));
    var bar = el("progress", "chip-progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Uploading " + file.name);
    chip.appendChild(bar);
    var status = el("span", "file-status is-uploading", "uploading");
    chip.appendChild(status);
    var remove = el("button", "chip-remove", "×");
    remove.type = "button";
    remove.setAttribute("data-action", "remove-file");
    remove.setAttribute("aria-label", "Remove " + file.name);
    chip.appendChild(remove);
    return chip;
  }

  function fail(chip, message) {
    chip.classList.remove("is-uploading");
    chip.classList.add("is-failed");
    var bar = $(".chip-progress", chip);
    if (bar) bar.remove();
    var status = $(".file-status", chip);
    status.className = "file-status is-failed";
    status.textContent = "failed: " + message;
  }

  // Swap the placeholder for the chip(s) the server rendered, and let htmx wire their polling.
  function replaceWithServerChips(chip, html) {
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var nodes = Array.prototype.slice.call(holder.content.children);
    if (!nodes.length) return false;
    nodes.forEach(function (node) { chip.parentNode.insertBefore(node, chip); });
    chip.remove();
    if (window.htmx) nodes.forEach(function (node) { window.htmx.process(node); });
    return true;
  }

  function upload(file) {
    var form = composer();
    var box = tray();
    if (!form || !box) return;
    var chip = placeholder(file);
    box.appendChild(chip);
    box.hidden = false;
    var limit = parseInt(form.getAttribute("data-max-bytes") || "0", 10);
    if (limit && file.size > limit) {
      fail(chip, file.name + " is " + humanSize(file.size) + "; the limit is " + humanSize(limit) + " a file.");
      return;
    }
    var data = new FormData();
    data.append("file", file, file.name);
    var conversation = form.getAttribute("data-conversation");
    if (conversation) data.append("conversation", conversation);
    var xhr = new XMLHttpRequest();
    chip._xhr = xhr;
    xhr.open("POST", form.getAttribute("data-upload-url"));
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.upload.addEventListener("progress", function (evt) {
      var bar = $(".chip-progress", chip);
      if (bar && evt.lengthComputable) bar.value = Math.round((evt.loaded / evt.total) * 100);
    });
    xhr.addEventListener("load", function () {
      chip._xhr = null;
      var type = xhr.getResponseHeader("Content-Type") || "";
      var body = xhr.responseText || "";
      if (type.indexOf("text/html") === 0 && body.indexOf("upload-chip") >= 0 && replaceWithServerChips(chip, body)) return;
      if (xhr.status === 413) fail(chip, "this file is too large to upload.");
      else if (xhr.status === 403 || (xhr.responseURL || "").indexOf("/accounts/login/") >= 0)
        fail(chip, "you were logged out, or the page is old: reload it and try again.");
      else fail(chip, "the upload did not work (HTTP " + xhr.status + "); try again.");
    });
    xhr.addEventListener("error", function () {
      chip._xhr = null;
      fail(chip, "the upload was interrupted; check the connection and try again.");
    });
    xhr.send(data);
  }

  function uploadAll(files) {
    Array.prototype.slice.call(files || []).forEach(upload);
  }

  /* ---- paperclip, picker, remove ------------------------------------------------------------ */

  document.addEventListener("click", function (evt) {
    var target = evt.target.closest("[data-action]");
    if (!target) return;
    var action = target.getAttribute("data-action");
    if (action === "attach-files") {
      var input = $("#file-input");
      if (input) input.click();
    } else if (action === "remove-file") {
      var chip = target.closest(".upload-chip");
      if (!chip) return;
      if (chip._xhr) chip._xhr.abort();
      var uuid = chip.getAttribute("data-file");
      if (uuid && !chip.hasAttribute("data-picked")) {
        // A file uploaded for this message and removed before sending is deleted, bytes and text.
        fetch("/files/" + uuid + "/delete", {
          method: "POST", credentials: "same-origin",
          headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "XMLHttpRequest" },
        });
      }
      chip.remove();
      var box = tray();
      if (box && !box.children.length) box.hidden = true;
    } else if (action === "pick-file") {
      var id = target.getAttribute("data-file");
      var template = document.getElementById("pick-" + id);
      var box2 = tray();
      if (template && box2 && !$('.upload-chip[data-file="' + id + '"]', box2)) {
        var node = template.content.firstElementChild.cloneNode(true);
        box2.appendChild(node);
        box2.hidden = false;
        if (window.htmx) window.htmx.process(node);
      }
      var menu = target.closest("details");
      if (menu) menu.open = false;
    }
  });

  document.addEventListener("change", function (evt) {
    if (evt.target.id === "file-input") {
      uploadAll(evt.target.files);
      evt.target.value = "";
    }
  });

  /* ---- drag-and-drop and paste -------------------------------------------------------------- */

  function carriesFiles(evt) {
    var types = evt.dataTransfer && evt.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") >= 0;
  }

  ["dragenter", "dragover"].forEach(function (name) {
    document.addEventListener(name, function (evt) {
      var zone = evt.target.closest && evt.target.closest(".composer");
      if (!zone || !carriesFiles(evt)) return;
      evt.preventDefault();
      evt.dataTransfer.dropEffect = "copy";
      zone.classList.add("is-dropping");
    });
  });

  document.addEventListener("dragleave", function (evt) {
    var zone = evt.target.closest && evt.target.closest(".composer");
    if (zone && !zone.contains(evt.relatedTarget)) zone.classList.remove("is-dropping");
  });

  document.addEventListener("drop", function (evt) {
    var zone = evt.target.closest && evt.target.closest(".composer");
    if (!zone || !evt.dataTransfer || !evt.dataTransfer.files.length) return;
    evt.preventDefault();
    zone.classList.remove("is-dropping");
    uploadAll(evt.dataTransfer.files);
  });

  document.addEventListener("paste", function (evt) {
    if (evt.target.id !== "composer-text" || !evt.clipboardData || !evt.clipboardData.files.length) return;
    evt.preventDefault();
    uploadAll(evt.clipboardData.files);
  });

  /* ---- sending ------------------------------------------------------------------------------ */

  // A message waits for its uploads: sending while a file is still on its way would leave it out.
  document.addEventListener("submit", function (evt) {
    if (evt.target.id !== "composer" || !$(".upload-chip.is-uploading", evt.target)) return;
    evt.preventDefault();
    evt.stopImmediatePropagation();
    var error = $("#composer-error");
    if (error) {
      error.textContent = "Wait a moment: the files are still uploading.";
      error.hidden = false;
    }
  }, true);

  document.addEventListener("htmx:wsAfterSend", function (evt) {
    var form = evt.target && evt.target.closest ? evt.target.closest("form") : null;
    if (!form || form.id !== "composer") return;
    var box = tray();
    if (box) {
      box.innerHTML = "";
      box.hidden = true;
    }
  });
})();
