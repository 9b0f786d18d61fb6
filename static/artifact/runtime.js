/* kimiweb artifacts: the runtime page. Inside the chat page's sandboxed frame it asks its parent for
 * the artifact, then replaces itself with the artifact's document (static/artifact/build.js); opened
 * in a tab of its own it reads the artifact from the URL's fragment. Either way the document keeps
 * this page's CSP: no network, and an opaque origin. */
(function () {
  "use strict";
  var assets = JSON.parse(document.getElementById("artifact-assets").textContent);

  function show(artifact) {
    var html = window.KimiArtifact.buildDocument(artifact, window.KimiArtifact.srcTag(assets));
    document.open();
    document.write(html);
    document.close();
  }

  function fromFragment() {
    var json = decodeURIComponent(escape(atob(location.hash.slice(1))));
    return JSON.parse(json);
  }

  if (location.hash.length > 1) {
    window.addEventListener("load", function () {
      setTimeout(function () {
        var artifact;
        try { artifact = fromFragment(); } catch (e) {
          document.body.textContent = "This link does not hold an artifact.";
          return;
        }
        show(artifact);
      }, 0);
    });
    return;
  }

  function onMessage(evt) {
    var data = evt.data;
    if (evt.source !== window.parent || !data || data.kimiweb_artifact !== 1 || data.type !== "render") return;
    window.removeEventListener("message", onMessage);
    show(data.artifact);
  }
  window.addEventListener("message", onMessage);
  if (window.parent !== window) window.parent.postMessage({ kimiweb_artifact: 1, type: "ready" }, "*");
})();
