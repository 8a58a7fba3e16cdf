// keydrop dashboard: progressive enhancement only. Every page works without this file; with it,
// copy buttons copy, confirm dialogs ask, and expiry times count down. Loaded from /ui/app.js
// (the Content-Security-Policy allows no inline script).
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain HTTP on a non-localhost address has no clipboard API: select and copy.
  return new Promise(function (resolve, reject) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    if (ok) { resolve(); } else { reject(new Error("copy refused")); }
  });
}

document.addEventListener("click", function (ev) {
  var btn = ev.target.closest("button[data-copy]");
  if (!btn) { return; }
  ev.preventDefault();
  var label = btn.textContent;
  copyText(btn.getAttribute("data-copy")).then(function () {
    btn.textContent = btn.getAttribute("data-copied") || label;
    btn.setAttribute("data-done", "1");
    setTimeout(function () { btn.textContent = label; }, 2000);
  }, function () {
    var input = btn.closest("li, section, div") && btn.closest("li, section, div").querySelector("input[readonly]");
    if (input) { input.focus(); input.select(); }
  });
});

document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) { ev.preventDefault(); }
});

function countdown() {
  var now = Date.now();
  document.querySelectorAll("[data-until]").forEach(function (el) {
    var until = Date.parse(el.getAttribute("data-until"));
    if (isNaN(until)) { return; }
    var s = Math.max(0, Math.floor((until - now) / 1000));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    el.textContent = "(" + (d > 0 ? d + "d " : "") + h + "h " + m + "m)";
  });
}

document.addEventListener("DOMContentLoaded", function () {
  countdown();
  setInterval(countdown, 30000);
});
