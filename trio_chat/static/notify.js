// Desktop notifications for mentions and direct messages, shown only while
// the tab is hidden and only once the user allowed them (the bell button asks
// the browser, from the click: browsers refuse to ask otherwise).

import { remembered, remember, STORAGE } from "/static/store.js";

const supported = typeof window.Notification === "function";

export const notifications = {
  /** "unsupported", "denied", "off" (allowed by the browser, turned off here), "on", or "default" (not asked yet). */
  get state() {
    if (!supported) return "unsupported";
    const permission = window.Notification.permission;
    if (permission !== "granted") return permission;
    return remembered(STORAGE.notify) === "off" ? "off" : "on";
  },

  /** The bell: ask the browser the first time, then turn them on and off. */
  async toggle() {
    if (!supported) return this.state;
    if (window.Notification.permission === "default") {
      const answer = await window.Notification.requestPermission();
      if (answer === "granted") remember(STORAGE.notify, "on");
      return this.state;
    }
    if (window.Notification.permission === "granted") remember(STORAGE.notify, this.state === "on" ? "off" : "on");
    return this.state;
  },

  /** Show one, if allowed and the tab is hidden; *onclick* brings the conversation up. */
  show(title, body, { tag, onclick } = {}) {
    if (this.state !== "on" || !document.hidden) return null;
    try {
      const note = new window.Notification(title, { body: body.slice(0, 200), tag });
      note.onclick = () => {
        window.focus();
        onclick?.();
        note.close();
      };
      return note;
    } catch {
      return null; // e.g. a browser that wants a service worker for them
    }
  },
};

/** Render the bell button's look and label for the current state. */
export function renderBell(button) {
  const state = notifications.state;
  button.hidden = state === "unsupported";
  button.dataset.state = state;
  const labels = {
    default: "Turn on notifications for mentions and direct messages",
    on: "Notifications are on: click to turn them off",
    off: "Notifications are off: click to turn them on",
    denied: "Notifications are blocked in this browser's settings",
  };
  button.title = labels[state] ?? "";
  button.setAttribute("aria-label", labels[state] ?? "Notifications");
  button.setAttribute("aria-pressed", String(state === "on"));
}
