// The dashboard's only script: while a form's answer is on its way, say so.
// Pages work without it; it adds the loading state (a bar under the header, a busy
// button) and nothing else.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-loading")) {
    return;
  }
  document.body.classList.add("loading");
  form.setAttribute("aria-busy", "true");
  const button = form.querySelector("button[type=submit]");
  if (button) {
    button.dataset.label = button.textContent;
    button.textContent = "Loading…";
  }
});
// A page restored from the back/forward cache is not loading any more.
window.addEventListener("pageshow", () => {
  document.body.classList.remove("loading");
  for (const form of document.querySelectorAll("form[aria-busy]")) {
    form.removeAttribute("aria-busy");
    const button = form.querySelector("button[type=submit]");
    if (button && button.dataset.label) {
      button.textContent = button.dataset.label;
    }
  }
});
