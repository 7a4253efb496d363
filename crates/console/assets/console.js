// cutover's console: follows a deployment's stream and calls the API's own actions. No
// framework, nothing fetched from elsewhere; the server renders every piece of HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

function headers(json) {
  const h = { Accept: "application/json" };
  if (json) h["Content-Type"] = "application/json";
  if (csrf) h["X-CSRF-Token"] = csrf;
  return h;
}

function notice(text, error) {
  const el = document.getElementById("notice");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("error", !!error);
}

// The live part: re-rendered by the server whenever the stream says the deployment changed.
const live = document.getElementById("live");
if (live) {
  // One fetch at a time; a change during it asks for one more, so the last state always shows.
  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const response = await fetch(live.dataset.part, { headers: { Accept: "text/html" } });
        if (response.redirected || response.status === 401) return location.reload();
        if (!response.ok) return;
        const el = document.activeElement;
        const focused = el && live.contains(el) ? [el.tagName, el.getAttribute("href"), el.textContent] : null;
        live.innerHTML = await response.text();
        // Keyboard users keep their place: the same button or link gets the focus back.
        if (focused) [...live.querySelectorAll("button, a[href]")]
          .find((b) => b.tagName === focused[0] && b.getAttribute("href") === focused[1] && b.textContent === focused[2])
          ?.focus();
      } while (again);
    } finally {
      busy = false;
    }
  };
  if (live.dataset.stream) {
    const stream = new EventSource(live.dataset.stream);
    for (const kind of ["deployment", "targets", "event", "execution", "build", "service", "tasks", "target_group", "forwards"]) stream.addEventListener(kind, refresh);
  }
  // Metrics move with every request, not with the engine: their pages ask again on a timer.
  if (live.dataset.every) setInterval(refresh, Number(live.dataset.every));
  document.body.dataset.live = "following";
}

// Every action button asks first, then calls the API.
const dialog = document.getElementById("confirm");
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || !dialog) return;
  document.getElementById("confirm-title").textContent = button.textContent;
  document.getElementById("confirm-text").textContent = button.dataset.confirm;
  // An approval's decision carries a comment, asked for in the dialog.
  const comment = document.getElementById("confirm-comment");
  const asks = button.dataset.comment !== undefined;
  if (comment) { comment.value = ""; comment.parentElement.hidden = !asks; }
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    notice(button.textContent + ": sent…");
    const body = JSON.parse(button.dataset.body);
    if (asks && comment) body.comment = comment.value;
    const response = await fetch(button.dataset.action, {
      method: "POST", headers: headers(true), body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (response.ok) notice(button.textContent + ": done; the page follows what it started.");
    else notice(button.textContent + " was refused: " + (answer.error || response.status), true);
  };
  dialog.showModal();
});

document.querySelector("[data-logout]")?.addEventListener("click", async () => {
  await fetch("/logout", { method: "POST", headers: headers(false) });
  location.href = "/login";
});

// A log that follows what is written to it while its build runs (`?follow=true` streams it).
const followed = document.querySelector("pre[data-follow]");
if (followed) {
  (async () => {
    const response = await fetch(followed.dataset.follow, { headers: { Accept: "text/plain" } });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      followed.textContent = "The log cannot be read: " + (answer.error || response.status);
      return;
    }
    followed.dataset.state = "following";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      // Whoever reads at the bottom stays there; whoever scrolled up keeps their place.
      const atBottom = followed.scrollTop + followed.clientHeight >= followed.scrollHeight - 4;
      followed.append(decoder.decode(value, { stream: true }));
      if (atBottom) followed.scrollTop = followed.scrollHeight;
    }
    followed.dataset.state = "ended";
  })();
}
