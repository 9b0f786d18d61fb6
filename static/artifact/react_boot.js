/* kimiweb artifacts: runs a React component's source (the #artifact-source JSON) in the browser.
 * Babel turns JSX/TSX into a module (lines kept, so errors point at what the model wrote); its
 * imports resolve through an import map to the vendored libraries already loaded as globals; any
 * other import stops with a message naming what is available. The default export is mounted in
 * #root under an error boundary that reports render errors with their line. */
(function () {
  "use strict";
  var bridge = window.KimiArtifactBridge;
  var React = window.React;
  var source = JSON.parse(document.getElementById("artifact-source").textContent);

  function jsx(type, props, key) {
    return key === undefined ? React.createElement(type, props) : React.createElement(type, Object.assign({ key: key }, props));
  }

  var MODULES = {
    react: React,
    "react-dom": window.ReactDOM,
    "react-dom/client": window.ReactDOM,
    "react/jsx-runtime": { jsx: jsx, jsxs: jsx, Fragment: React.Fragment },
    "react/jsx-dev-runtime": { jsxDEV: jsx, Fragment: React.Fragment },
    recharts: window.Recharts,
    "lucide-react": window.LucideReact,
    "prop-types": window.PropTypes,
  };
  var AVAILABLE = ["react", "react-dom", "recharts", "lucide-react", "prop-types"];
  var RESERVED = ("break case catch class const continue debugger default delete do else enum export extends " +
    "false finally for function if import in instanceof new null return super switch this throw true try " +
    "typeof var void while with yield let static implements interface package private protected public await").split(" ");

  // A module that re-exports a global: `import { useState } from "react"` reads window.React.useState.
  function shim(name) {
    var keys = Object.keys(MODULES[name]).filter(function (k) {
      return /^[A-Za-z_$][\w$]*$/.test(k) && RESERVED.indexOf(k) < 0 && k !== "__m";
    });
    return "const __m = window.__kimiModules[" + JSON.stringify(name) + "];\nexport default __m;\n" +
      (keys.length ? "export const {" + keys.join(", ") + "} = __m;\n" : "");
  }

  var DEFAULT = "__artifact_default__";

  // Records imports and turns the default export into a variable the mount line can reach.
  function artifactPlugin(babel) {
    var t = babel.types;
    function record(state, node) {
      if (node.source && node.importKind !== "type" && node.exportKind !== "type") {
        state.file.metadata.artifactImports.push({ name: node.source.value, line: node.loc && node.loc.start.line });
      }
    }
    function defaultVar(expr) {
      return t.variableDeclaration("const", [t.variableDeclarator(t.identifier(DEFAULT), expr)]);
    }
    return {
      pre: function (file) { file.metadata.artifactImports = []; file.metadata.artifactDefault = false; },
      visitor: {
        ImportDeclaration: function (path, state) { record(state, path.node); },
        ExportAllDeclaration: function (path, state) { record(state, path.node); },
        ExportNamedDeclaration: function (path, state) {
          record(state, path.node);
          if (path.node.source) return;
          var specs = path.node.specifiers || [];
          var def = specs.filter(function (s) { return s.exported && s.exported.name === "default"; })[0];
          if (!def) return;
          state.file.metadata.artifactDefault = true;
          path.node.specifiers = specs.filter(function (s) { return s !== def; });
          path.insertAfter(defaultVar(t.identifier(def.local.name)));
          if (!path.node.specifiers.length && !path.node.declaration) path.remove();
        },
        ExportDefaultDeclaration: function (path, state) {
          var decl = path.node.declaration;
          state.file.metadata.artifactDefault = true;
          if ((t.isFunctionDeclaration(decl) || t.isClassDeclaration(decl)) && decl.id) {
            path.replaceWithMultiple([decl, defaultVar(t.identifier(decl.id.name))]);
          } else if (t.isFunctionDeclaration(decl)) {
            path.replaceWith(defaultVar(t.functionExpression(null, decl.params, decl.body, decl.generator, decl.async)));
          } else if (t.isClassDeclaration(decl)) {
            path.replaceWith(defaultVar(t.classExpression(null, decl.superClass, decl.body, [])));
          } else if (!t.isTSInterfaceDeclaration(decl)) {
            path.replaceWith(defaultVar(decl));
          }
        },
      },
    };
  }

  function firstLine(message) {
    return String(message || "").split("\n")[0].replace(/^\/?artifact\.tsx: /, "");
  }

  function compile() {
    try {
      return window.Babel.transform(source, {
        filename: "artifact.tsx",
        sourceType: "module",
        retainLines: true,
        presets: [["react", { runtime: "automatic" }], ["typescript", { isTSX: true, allExtensions: true, onlyRemoveTypeImports: true }]],
        plugins: [artifactPlugin],
      });
    } catch (error) {
      var loc = error.loc || {};
      bridge.report({ message: "Syntax error: " + firstLine(error.message), line: loc.line, column: loc.column != null ? loc.column + 1 : null });
      return null;
    }
  }

  function makeBoundary() {
    function Boundary(props) {
      React.Component.call(this, props);
      this.state = { error: null };
    }
    Boundary.prototype = Object.create(React.Component.prototype);
    Boundary.prototype.constructor = Boundary;
    Boundary.getDerivedStateFromError = function (error) { return { error: error }; };
    Boundary.prototype.componentDidCatch = function (error) { bridge.reportError(error); };
    Boundary.prototype.render = function () {
      if (!this.state.error) return this.props.children;
      return React.createElement("pre", { style: { color: "#b00", padding: "12px", whiteSpace: "pre-wrap" } },
        String(this.state.error.message || this.state.error));
    };
    return Boundary;
  }

  window.__kimiMount = function (App) {
    if (typeof App !== "function" && !(App && typeof App === "object" && App.$$typeof)) {
      bridge.report({ message: "The component needs a default export: export default function App() { … }" });
      return;
    }
    var Boundary = makeBoundary();
    window.ReactDOM.createRoot(document.getElementById("root"))
      .render(React.createElement(Boundary, null, React.createElement(App)));
    setTimeout(bridge.rendered, 0);
  };

  function run() {
    var result = compile();
    if (!result) return;
    var imports = result.metadata.artifactImports;
    for (var i = 0; i < imports.length; i++) {
      if (!Object.prototype.hasOwnProperty.call(MODULES, imports[i].name)) {
        bridge.report({
          message: 'Cannot import "' + imports[i].name + '": artifacts run offline with only ' + AVAILABLE.join(", "),
          line: imports[i].line,
        });
        return;
      }
    }
    if (!result.metadata.artifactDefault) {
      bridge.report({ message: "The component needs a default export: export default function App() { … }" });
      return;
    }
    window.__kimiModules = MODULES;
    var map = { imports: {} };
    Object.keys(MODULES).forEach(function (name) {
      map.imports[name] = "data:text/javascript;charset=utf-8," + encodeURIComponent(shim(name));
    });
    var mapScript = document.createElement("script");
    mapScript.type = "importmap";
    mapScript.textContent = JSON.stringify(map);
    document.head.appendChild(mapScript);
    var module = document.createElement("script");
    module.type = "module";
    module.textContent = result.code + "\n;window.__kimiMount(typeof " + DEFAULT + " === 'undefined' ? undefined : " + DEFAULT +
      ");\n//# sourceURL=artifact.tsx\n";
    document.body.appendChild(module);
  }

  run();
})();
