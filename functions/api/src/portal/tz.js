// The portal's one script (same origin, no dependency). Times are rendered in UTC by the server;
// this shows them in the viewer's time zone. Local date-time inputs get their UTC value copied
// into a hidden twin (`{name}_utc`) on submit, so the server never guesses a zone.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    t.title = t.textContent;
    t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  });
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input[type=datetime-local]").forEach(function (input) {
        var twin = form.querySelector("input[name='" + input.name + "_utc']");
        if (!twin) return;
        var d = input.value ? new Date(input.value) : null;
        twin.value = d && !isNaN(d.getTime()) ? d.toISOString() : "";
      });
    });
  });
});
