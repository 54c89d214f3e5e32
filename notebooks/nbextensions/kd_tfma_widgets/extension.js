// Lets the classic Notebook create TFMA 0.47's widgets with ipywidgets 7.8 (widgetsnbextension 3.6).
// TFMA's models and views are Backbone-style subclasses (DOMWidgetModel.extend, DOMWidgetView.extend) of the
// ES2015 classes that widgetsnbextension 3.6 ships. Backbone's extend makes a constructor that calls its parent
// without `new` and copies only enumerable statics, so the widget manager fails ("_deserialize_state is not a
// function", then "Class constructor cannot be invoked without 'new'"). This replaces each of them, in TFMA's
// module, with an ES2015 subclass of the same parent that has the same prototype members.
// scripts/setup.sh installs and enables it beside TFMA's own extension.
define(["nbextensions/jupyter-js-widgets/extension"], function () {
  "use strict";
  window.require(["@jupyter-widgets/base", "nbextensions/tensorflow_model_analysis/index"], function (base, tfma) {
    Object.keys(tfma).forEach(function (name) {
      var legacy = tfma[name];
      if (typeof legacy !== "function") { return; }
      var parent = [base.DOMWidgetModel, base.DOMWidgetView].find(function (p) {
        return legacy.prototype instanceof p;
      });
      if (!parent) { return; }
      var modern = class extends parent {};
      Object.getOwnPropertyNames(legacy.prototype).forEach(function (key) {
        if (key !== "constructor") {
          Object.defineProperty(modern.prototype, key, Object.getOwnPropertyDescriptor(legacy.prototype, key));
        }
      });
      tfma[name] = modern;
    });
  });
  return {load_ipython_extension: function () {}};
});
