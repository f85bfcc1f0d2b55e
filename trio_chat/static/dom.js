// Building the page's DOM: elements, text with links and mentions, avatars, times.
//
// Every piece of user-supplied text reaches the page through textContent or
// text nodes, never through innerHTML.

/** Length in code points, the unit the server's limit counts. */
export function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

export const $ = (id) => document.getElementById(id);

// Bidi controls (embeddings, overrides, isolates, marks) can make a link
// read as something else ("…/\u202egnp.exe" shows as "…/exe.png"): in a
// link's text each one is shown as a visible [U+202E] (its code point) instead.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function visibleBidi(text) {
  return text.replace(BIDI_CONTROLS, (c) => `[U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

// ------------------------------------------------------------------ helpers

/**
 * Build an element. `props` keys: `class`, `dataset`, `on<event>`, anything
 * else becomes an attribute. Children are nodes or strings (as text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// `@name` mentions a user (docs/protocol.md, *Mentions*): the longest user id
// after the @, without a trailing ".", "-" or "@", where the @ starts the text
// or follows a character that cannot be part of a user id.
const MENTION = /(^|[^A-Za-z0-9_.@-])@([A-Za-z0-9][A-Za-z0-9_.@-]*)/g;

/** The mentions in *text*: [{start, end, name}] (end excludes). */
export function findMentions(text) {
  const found = [];
  for (const match of text.matchAll(MENTION)) {
    const name = match[2].slice(0, 64).replace(/[.@-]+$/, "");
    const start = match.index + match[1].length;
    found.push({ start, end: start + 1 + name.length, name });
  }
  return found;
}

/** Plain text with its mentions highlighted (*me*'s more strongly), as DOM nodes. */
function mentionify(text, me) {
  const nodes = [];
  let last = 0;
  for (const { start, end, name } of findMentions(text)) {
    if (start > last) nodes.push(text.slice(last, start));
    nodes.push(h("span", { class: name === me ? "mention mention--me" : "mention", dataset: { user: name } }, text.slice(start, end)));
    last = end;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

/** Text with http(s) links made clickable and `@name` mentions marked, as DOM nodes. */
export function linkify(text, me = null) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(/\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g)) {
    if (match.index > last) nodes.push(...mentionify(text.slice(last, match.index), me));
    const link = h("a", { target: "_blank", rel: "noopener noreferrer nofollow", dir: "ltr" }, visibleBidi(match[0]));
    link.href = match[0];
    nodes.push(link);
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(...mentionify(text.slice(last), me));
  return nodes;
}

export function hue(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(name, size = "") {
  const el = h("span", { class: `avatar ${size}`.trim(), "aria-hidden": "true" }, [...name][0]?.toUpperCase() ?? "?");
  el.style.setProperty("--hue", hue(name));
  return el;
}

export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(date) === dayKey(today)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  const options = { weekday: "long", day: "numeric", month: "long" };
  if (date.getFullYear() !== today.getFullYear()) options.year = "numeric";
  return new Intl.DateTimeFormat(undefined, options).format(date);
}

export function timeElement(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("time", {}, "");
  return h("time", { datetime: iso, title: fullFormat.format(date) }, timeFormat.format(date));
}

export function seconds(ms) {
  return Math.max(1, Math.ceil(ms / 1000));
}

export function statusLabel(status) {
  return status ? status.charAt(0).toUpperCase() + status.slice(1) : "";
}

