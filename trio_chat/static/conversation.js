// One room or direct-message thread on the chat page: its message log (with
// edits, tombstones, reactions and mentions) and its entry in the sidebar.

import { h, linkify, avatar, dayKey, dayLabel, timeElement, findMentions } from "/static/dom.js";

/** The user ids *content* mentions, as the server lists them (when it does not say). */
const mentioned = (content) => [...new Set(findMentions(content).map((found) => found.name))];

export const ACTION_PREFIX = "/me "; // "/me waves" is shown as "* alice waves" (docs/protocol.md)
const GROUP_WINDOW_MS = 5 * 60 * 1000; // consecutive messages by one author within this window share a header
const LONG_PRESS_MS = 500;

/** The reactions a server offers when its `welcome` does not say. */
export const DEFAULT_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "🚀"];

/**
 * What a message's controls do, given by the page: `me()`, `reactions()`,
 * `react(conv, id, emoji)`, `edit(conv, id, content)`, `remove(conv, id)`,
 * `select(conv)`.
 * @typedef {object} Actions
 */

export class Conversation {
  /**
   * @param {"room" | "dm"} kind
   * @param {string} name a room name, or the other user's id
   * @param {Actions} actions
   */
  constructor(kind, name, actions) {
    this.kind = kind;
    this.name = name;
    this.actions = actions;
    this.key = `${kind}:${name}`;
    this.unread = 0;
    this.mentions = 0;
    this.read = 0; // this user's read marker, as the server last said
    this.topic = null;
    this.lastDay = null;
    this.lastAuthor = null;
    this.lastTime = 0;
    this.maxId = 0;
    this.members = [];
    this.loaded = false; // a direct conversation whose history was asked for
    this.refused = false; // a join the server turned down (why), or a room closed
    this.closed = false; // a room a moderator closed (refused says so too)
    this.typers = new Map(); // user id -> timer
    /** id -> {el, author, content, mentions, deleted, reactions: Map<emoji, user ids>, refreshMenu} */
    this.entries = new Map();
    this.stream = h("div", { class: "stream" });
    this.outbox = h("div", { class: "outbox" });
    this.empty = h("p", { class: "empty" }, kind === "room"
      ? `No messages in #${name} yet. Say hello!`
      : `This is the start of your conversation with ${name}.`);
    this.divider = null; // "New messages", above the first one that arrived unseen
    this.leftAt = new Map(); // user id -> {at, notice}: who left lately, in case they were only reconnecting
    this.log = h("section", { class: "log", dataset: { conv: this.key }, hidden: true, "aria-label": this.title },
      this.empty, this.stream, this.outbox);
    this.badge = h("span", { class: "badge", hidden: true });
    this.dot = kind === "dm" ? h("span", { class: "dot", dataset: { status: "online" }, "aria-hidden": "true" }) : null;
    this.button = h("button", { type: "button", class: "conv", onclick: () => actions.select(this) },
      kind === "room" ? h("span", { class: "conv-hash", "aria-hidden": "true" }, "#") : this.dot,
      h("span", { class: "conv-name" }, name),
      this.badge);
    this.item = h("li", { dataset: { conv: this.key } }, this.button);
  }

  get title() {
    return this.kind === "room" ? `#${this.name}` : this.name;
  }

  /** How the client names this conversation: a room name, or `{with}`. */
  get target() {
    return this.kind === "room" ? this.name : { with: this.name };
  }

  setUnread(count, mentions = count === 0 ? 0 : this.mentions) {
    this.unread = count;
    this.mentions = Math.min(mentions, count);
    this.badge.textContent = count > 99 ? "99+" : String(count);
    this.badge.hidden = count === 0;
    this.badge.classList.toggle("badge--mention", this.mentions > 0);
    this.badge.title = this.mentions > 0 ? `${count} unread, ${this.mentions} mentioning you` : `${count} unread`;
    this.item.classList.toggle("has-unread", count > 0);
  }

  /** Unread messages after the marker *read*, from what the page holds. */
  countAfter(read, me) {
    let unread = 0;
    let mentions = 0;
    for (const [id, entry] of this.entries) {
      if (id <= read || entry.author === me || entry.deleted) continue;
      unread++;
      if (entry.mentions.includes(me)) mentions++;
    }
    return { unread, mentions };
  }

  /** Append a timed entry to the stream, with a day separator when the day changes. */
  appendTimed(el, iso) {
    const date = new Date(iso);
    if (!Number.isNaN(date.getTime()) && dayKey(date) !== this.lastDay) {
      this.lastDay = dayKey(date);
      this.lastAuthor = null;
      this.stream.append(h("div", { class: "day", role: "separator" }, h("span", {}, dayLabel(date))));
    }
    this.stream.append(el);
  }

  /** Mark where unseen messages start (once, until the reader moves on). */
  markNew(el) {
    if (this.divider || !el?.isConnected) return;
    this.divider = h("div", { class: "new-divider", role: "separator" }, h("span", {}, "New messages"));
    el.before(this.divider);
  }

  /** The divider above the first message after the marker *read* from someone else. */
  markNewAfter(read, me) {
    const first = [...this.entries.entries()]
      .filter(([id, entry]) => id > read && entry.author !== me && !entry.deleted)
      .sort(([a], [b]) => a - b)[0];
    if (first) this.markNew(first[1].el);
  }

  clearNew() {
    this.divider?.remove();
    this.divider = null;
  }

  addMessage({ id, user_id: author, content, time, own, edited, deleted, reactions, mentions }) {
    if (id !== undefined && this.entries.has(id)) return this.entries.get(id).el;
    const me = this.actions.me();
    const at = new Date(time).getTime();
    const action = !deleted && content.startsWith(ACTION_PREFIX) && content.slice(ACTION_PREFIX.length).trim() !== "";
    const grouped = !action && author === this.lastAuthor && at - this.lastTime < GROUP_WINDOW_MS;
    const entry = {
      el: null,
      author,
      content,
      action,
      edited: edited ?? null,
      deleted: Boolean(deleted),
      mentions: mentions ?? mentioned(content),
      reactions: new Map(Object.entries(reactions ?? {})),
    };
    const el = h("article", {
      class: `msg${own || author === me ? " msg--own" : ""}${grouped ? " msg--cont" : ""}${action ? " msg--action" : ""}`,
      dataset: { author, ...(id !== undefined ? { id: String(id) } : {}) },
    },
      grouped ? h("span", { class: "avatar-gap" }, timeElement(time)) : avatar(author),
      h("div", { class: "msg-body" },
        grouped ? null : h("header", { class: "msg-meta" },
          h("span", { class: "author" }, author),
          own ? h("span", { class: "you" }, "you") : null,
          timeElement(time)),
        h("p", { class: "text" })));
    entry.el = el;
    if (id !== undefined) {
      this.entries.set(id, entry);
      this.#wireControls(el, id);
    }
    this.#render(entry);

    if (id !== undefined && id < this.maxId) {
      // Late arrival (an older page of history): slot it in by id, without touching grouping.
      const later = [...this.stream.querySelectorAll(".msg[data-id]")].find((other) => Number(other.dataset.id) > id);
      el.classList.remove("msg--cont");
      if (later) {
        this.stream.insertBefore(el, later);
        return el;
      }
    }
    if (id !== undefined) this.maxId = Math.max(this.maxId, id);
    this.appendTimed(el, time);
    this.lastAuthor = action ? null : author;
    this.lastTime = at;
    return el;
  }

  /** The room's ids started over: the messages shown so far can no longer be named by id. */
  forgetIds() {
    for (const { el } of this.entries.values()) {
      el.querySelector(".msg-actions")?.remove();
      el.querySelector(".reaction-picker")?.remove();
      el.querySelector(".msg-edit")?.remove();
      for (const button of el.querySelectorAll(".reaction")) button.disabled = true;
    }
    this.entries.clear();
    this.maxId = 0;
  }

  /** An `edit` event: the new text, marked "edited". */
  applyEdit({ id, content, edited }) {
    const entry = this.entries.get(id);
    if (!entry || entry.deleted) return null;
    const action = content.startsWith(ACTION_PREFIX) && content.slice(ACTION_PREFIX.length).trim() !== "";
    Object.assign(entry, { content, edited, action, mentions: mentioned(content) });
    this.#render(entry);
    return entry.el;
  }

  /** A `delete` event: the message becomes a tombstone. */
  applyDelete({ id }) {
    const entry = this.entries.get(id);
    if (!entry) return null;
    Object.assign(entry, { content: "", deleted: true, reactions: new Map() });
    this.#render(entry);
    return entry.el;
  }

  /** A `reaction` event: *user* put *emoji* on, or took it off. */
  applyReaction({ id, emoji, user_id: user, on }) {
    const entry = this.entries.get(id);
    if (!entry || entry.deleted) return;
    const users = (entry.reactions.get(emoji) ?? []).filter((who) => who !== user);
    if (on) users.push(user);
    if (users.length) entry.reactions.set(emoji, users);
    else entry.reactions.delete(emoji);
    this.#renderReactions(entry);
  }

  #render(entry) {
    const { el, content, deleted } = entry;
    const me = this.actions.me();
    const body = el.querySelector(".msg-body");
    const text = body.querySelector(".text");
    el.classList.toggle("msg--deleted", deleted);
    el.classList.toggle("msg--mentions-me", !deleted && entry.mentions.includes(me));
    el.classList.toggle("msg--action", entry.action);
    if (deleted) {
      text.replaceChildren("message deleted");
    } else if (entry.action) {
      text.replaceChildren("* ", h("span", { class: "action-author" }, entry.author), " ",
        ...linkify(content.slice(ACTION_PREFIX.length).trim(), me));
    } else {
      text.replaceChildren(...linkify(content, me));
    }
    body.querySelector(".edited-mark")?.remove();
    if (entry.edited && !deleted) {
      const date = new Date(entry.edited);
      text.after(h("span", { class: "edited-mark", title: Number.isNaN(date.getTime()) ? undefined : `edited ${date.toLocaleString()}` }, "(edited)"));
    }
    this.#renderReactions(entry);
    entry.refreshMenu?.();
  }

  #renderReactions(entry) {
    const { el } = entry;
    const me = this.actions.me();
    const body = el.querySelector(".msg-body");
    body.querySelector(".reactions")?.remove();
    if (entry.deleted || entry.reactions.size === 0) return;
    const id = Number(el.dataset.id);
    body.append(h("div", { class: "reactions" }, [...entry.reactions].map(([emoji, users]) => {
      const mine = users.includes(me);
      return h("button", {
        type: "button",
        class: mine ? "reaction reaction--mine" : "reaction",
        dataset: { emoji },
        "aria-pressed": String(mine),
        title: `${users.join(", ")} reacted with ${emoji}`,
        onclick: () => this.actions.react(this, id, emoji),
      }, h("span", { class: "reaction-emoji" }, emoji), h("span", { class: "reaction-count" }, String(users.length)));
    })));
  }

  /** The message's menu (hover, keyboard focus, or a long press): react, edit, delete. */
  #wireControls(el, id) {
    const menu = h("div", { class: "msg-actions", role: "toolbar", "aria-label": "Message actions" });
    el.append(menu);
    const fill = () => {
      const entry = this.entries.get(id);
      if (entry?.el !== el) return; // forgotten (the room's ids started over)
      const mine = entry.author === this.actions.me();
      menu.replaceChildren(
        entry.deleted ? null : h("button", { type: "button", class: "msg-action", dataset: { action: "react" }, title: "React", "aria-label": "React", onclick: () => this.#togglePicker(el, id) }, "☺"),
        mine && !entry.deleted ? h("button", { type: "button", class: "msg-action", dataset: { action: "edit" }, title: "Edit", "aria-label": "Edit", onclick: () => this.startEdit(id) }, "✎") : null,
        mine && !entry.deleted ? h("button", { type: "button", class: "msg-action", dataset: { action: "delete" }, title: "Delete", "aria-label": "Delete", onclick: () => this.#confirmDelete(menu, id) }, "🗑") : null,
      );
    };
    // Built again when the message changes (an edit, a delete) and when the
    // pointer comes back (a delete left unconfirmed is asked again), never on
    // focus: a mouse press focuses the button, and a menu built anew then
    // would take the button away before its click.
    this.entries.get(id).refreshMenu = fill;
    el.addEventListener("pointerenter", fill);
    let pressTimer = null;
    el.addEventListener("pointerdown", (event) => {
      if (event.pointerType !== "touch") return;
      pressTimer = setTimeout(() => {
        fill();
        this.#openMenu(el);
      }, LONG_PRESS_MS);
    });
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) el.addEventListener(type, () => clearTimeout(pressTimer));
    el.addEventListener("contextmenu", (event) => {
      if (event.target.closest("a")) return;
      event.preventDefault();
      fill();
      this.#openMenu(el);
    });
  }

  #openMenu(el) {
    for (const other of this.stream.querySelectorAll(".msg--menu")) if (other !== el) other.classList.remove("msg--menu");
    el.classList.add("msg--menu");
  }

  #togglePicker(el, id) {
    const open = el.querySelector(".reaction-picker");
    if (open) {
      open.remove();
      return;
    }
    const picker = h("div", { class: "reaction-picker", role: "group", "aria-label": "Pick a reaction" },
      this.actions.reactions().map((emoji) => h("button", {
        type: "button",
        class: "pick",
        dataset: { emoji },
        "aria-label": `React with ${emoji}`,
        onclick: () => {
          picker.remove();
          el.classList.remove("msg--menu");
          this.actions.react(this, id, emoji);
        },
      }, emoji)));
    el.querySelector(".msg-body").append(picker);
    picker.querySelector("button")?.focus();
  }

  #confirmDelete(menu, id) {
    menu.replaceChildren(
      h("span", { class: "confirm-text" }, "Delete this message?"),
      h("button", { type: "button", class: "msg-action msg-action--danger", dataset: { action: "confirm-delete" }, onclick: () => this.actions.remove(this, id) }, "Delete"),
      h("button", { type: "button", class: "msg-action", dataset: { action: "cancel" }, onclick: () => {
        menu.closest(".msg").classList.remove("msg--menu");
        this.entries.get(id)?.refreshMenu();
      } }, "Cancel"),
    );
    menu.querySelector("[data-action='cancel']").focus();
  }

  /** Edit message *id* in place: Enter saves, Escape cancels. */
  startEdit(id) {
    const entry = this.entries.get(id);
    if (!entry || entry.deleted || entry.el.querySelector(".msg-edit")) return;
    const text = entry.el.querySelector(".text");
    const input = h("textarea", { class: "msg-edit-input", rows: 2, "aria-label": "Edit message" });
    input.value = entry.content;
    const close = () => {
      form.remove();
      text.hidden = false;
      entry.el.classList.remove("msg--editing", "msg--menu");
    };
    const save = () => {
      const content = input.value.trim();
      if (content && content !== entry.content) this.actions.edit(this, id, content);
      close();
    };
    const form = h("form", { class: "msg-edit", onsubmit: (event) => { event.preventDefault(); save(); } },
      input,
      h("div", { class: "msg-edit-buttons" },
        h("button", { type: "submit", class: "btn btn-small btn-primary" }, "Save"),
        h("button", { type: "button", class: "btn btn-small btn-ghost", onclick: close }, "Cancel")));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        close();
      }
    });
    text.hidden = true;
    text.after(form);
    entry.el.classList.add("msg--editing");
    input.focus();
  }

  /** This user's newest message that can still be edited, or null. */
  lastOwnId() {
    const me = this.actions.me();
    const ids = [...this.entries].filter(([, entry]) => entry.author === me && !entry.deleted).map(([id]) => id);
    return ids.length ? Math.max(...ids) : null;
  }

  addNotice(text, { kind = "info", time = new Date().toISOString() } = {}) {
    const el = h("div", { class: `notice notice--${kind}`, role: kind === "error" ? "alert" : undefined },
      h("span", { class: "notice-text" }, text), timeElement(time));
    this.appendTimed(el, time);
    this.lastAuthor = null;
    return el;
  }

  addPending({ ref, content }, author) {
    const el = h("article", { class: "msg msg--own msg--pending", dataset: { ref, author } },
      avatar(author),
      h("div", { class: "msg-body" },
        h("header", { class: "msg-meta" },
          h("span", { class: "author" }, author),
          h("span", { class: "msg-status" }, "sending…")),
        h("p", { class: "text" }, linkify(content))));
    this.outbox.append(el);
    return el;
  }

  pendingFor(ref) {
    return [...this.outbox.children].find((el) => el.dataset.ref === ref) ?? null;
  }
}
