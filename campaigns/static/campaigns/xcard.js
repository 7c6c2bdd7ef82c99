// The X-card (CONTRACTS §7): any member taps it and the DM moves the story away from the
// current scene at once. It goes as `client.x_card` over the room's socket, never over HTTP:
// a socket message leaves no line in any access log. Nothing here says who tapped it, and
// the story line every member reads names no one.
//
// The first tap in a browser explains what it does (and asks once); the hover text says it
// too. A refusal (the X-card was tapped moments ago, or the campaign is archived) is said in
// plain words. The server's answer to a tap (its `server.ack`, or an `error`) carries
// `"for": "x_card"`: that is how the page knows it is this one's (`answers`).

import { asText } from "./dom.js";

const EXPLAINED_KEY = "rpgai.xCardExplained";
const ANSWER_WAIT_MS = 10_000;

function explainedBefore() {
  try {
    return window.localStorage.getItem(EXPLAINED_KEY) === "1";
  } catch {
    return false; // storage blocked: explain every time rather than never
  }
}

function rememberExplained() {
  try {
    window.localStorage.setItem(EXPLAINED_KEY, "1");
  } catch {
    // Nothing to do: the explanation shows again next time.
  }
}

/** "in 40 seconds" (or "in a minute"), from an error's retry_after. */
function waitWords(retryAfter) {
  const seconds = Math.ceil(Number(retryAfter));
  if (!Number.isFinite(seconds) || seconds <= 0) return "in a moment";
  if (seconds === 1) return "in a second";
  if (seconds < 60) return `in ${seconds} seconds`;
  return "in a minute";
}

export function createXCard({ send, isLive, isStopped, isArchived, notify, announce }) {
  const button = document.getElementById("x-card");
  const explain = document.getElementById("x-card-explain");
  const confirmButton = document.getElementById("x-card-confirm");
  const cancelButton = document.getElementById("x-card-cancel");
  let pending = false;
  let timer = null;

  function update() {
    button.setAttribute("aria-busy", pending ? "true" : "false");
    button.classList.toggle("sending", pending);
    // Disabled while one is on its way; the fieldset around it disables it when archived.
    button.disabled = pending || isStopped();
  }

  function setExplainOpen(open) {
    explain.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) confirmButton.focus();
  }

  function tap() {
    if (pending || isStopped()) return;
    if (isArchived()) {
      notify("This campaign is archived: read only. The X-card is not needed while nothing is played.", "info", "x-card");
      return;
    }
    if (!isLive() || !send({ type: "client.x_card" })) {
      notify("Not connected: the X-card was not sent. Tap it again once the room is live.", "error", "x-card");
      return;
    }
    pending = true;
    clearTimeout(timer);
    timer = setTimeout(() => {
      // No answer (the connection dropped?): if it was taken, its line is in the story.
      settle();
    }, ANSWER_WAIT_MS);
    update();
  }

  function settle() {
    pending = false;
    clearTimeout(timer);
    update();
  }

  button.addEventListener("click", () => {
    if (!explain.hidden) {
      setExplainOpen(false);
      return;
    }
    if (explainedBefore()) tap();
    else setExplainOpen(true);
  });
  confirmButton.addEventListener("click", () => {
    rememberExplained();
    setExplainOpen(false);
    tap();
    button.focus();
  });
  cancelButton.addEventListener("click", () => {
    setExplainOpen(false);
    button.focus();
  });
  explain.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      setExplainOpen(false);
      button.focus();
    }
  });
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "x-card-explain");
  update();

  return {
    /** Whether a server message answers an X-card tap (`for`: "x_card"). */
    answers(data) {
      return asText(data?.for) === "x_card";
    },
    /** The server took it (server.ack {seq}); the story line follows for everyone. */
    onAck() {
      settle();
      notify("X-card tapped: the DM is moving the story away from this scene. Nobody is told who tapped it.", "info", "x-card");
    },
    /** The server refused it: said in plain words. */
    onError(data) {
      settle();
      const code = asText(data.code);
      if (code === "rate_limited") {
        notify(
          `The X-card was tapped moments ago and the DM is already moving the story on. You can tap it again ${waitWords(data.retry_after)}.`,
          "error",
          "x-card",
        );
      } else if (code === "archived") {
        notify("This campaign is archived: read only. The X-card was not needed.", "info", "x-card");
      } else {
        notify(`The X-card did not go through: ${asText(data.detail) || "the server refused it"}. Tap it again in a moment.`, "error", "x-card");
      }
      announce?.("The X-card did not go through.");
    },
    /** The connection went live or was lost: an unanswered tap is forgotten. */
    onConnection() {
      if (!isLive() && pending) settle();
      update();
    },
    update,
  };
}
