// Keyboard shortcuts of the review screens: each <button data-key> is pressed by its key.
(function () {
  "use strict";
  const form = document.querySelector("form.review");
  if (!form) return;
  const aliases = form.dataset.kind === "pairwise" ? { arrowleft: "1", arrowright: "2" } : {};
  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.metaKey || event.repeat) return;
    const pressed = event.key.toLowerCase();
    const key = event.ctrlKey ? (event.key === "Enter" ? "ctrl+Enter" : null) : aliases[pressed] || pressed;
    // Letters and digits typed into a correction stay in it; only Ctrl+Enter saves from there.
    if (key === null || (event.target.tagName === "TEXTAREA" && key !== "ctrl+Enter")) return;
    const button = form.querySelector(`button[data-key="${CSS.escape(key)}"]`);
    if (!button) return;
    event.preventDefault();
    button.click();
  });
})();
