/* kimiweb artifacts: renders a Mermaid diagram's source (the #artifact-source JSON) into #diagram. */
(function () {
  "use strict";
  var bridge = window.KimiArtifactBridge;
  var source = JSON.parse(document.getElementById("artifact-source").textContent);
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark ? "dark" : "default" });

  function lineOf(error) {
    var loc = error && error.hash && error.hash.loc;
    if (loc && loc.first_line) return loc.first_line;
    var m = /line (\d+)/i.exec((error && error.message) || "");
    return m ? parseInt(m[1], 10) : null;
  }

  window.mermaid.render("artifact-diagram", source).then(function (result) {
    document.getElementById("diagram").innerHTML = result.svg;
    bridge.rendered();
  }, function (error) {
    var stray = document.getElementById("dartifact-diagram");
    if (stray) stray.remove();
    bridge.report({ message: "Mermaid: " + String((error && error.message) || error), line: lineOf(error) });
  });
})();
