/**
 * trio-chat.js: a reconnecting client for the trio_chat wire protocol, version 1.
 *
 * One ES module, no dependencies. It runs in browsers and in any runtime with
 * a WHATWG `WebSocket` and `EventTarget` (Node 22+, Deno, Bun).
 *
 * ```js
 * import { TrioChatClient } from "/trio-chat.js";
 *
 * const client = new TrioChatClient("wss://chat.example.org/ws", { user: "alice" });
 * client.addEventListener("message", (e) => console.log(e.detail.user_id, e.detail.content));
 * client.addEventListener("state", (e) => console.log("connection:", e.detail.state));
 * client.connect();
 * await client.join("lobby");
 * await client.send("lobby", "hello");   // resolves with the ack: {id, room, time, ref}
 * ```
 *
 * What it guarantees across dropped connections:
 * - it reconnects by itself, with exponential backoff and full jitter;
 * - it re-joins its rooms with `since` = the last message id it saw in each,
 *   so missed messages arrive once and in order;
 * - messages sent while offline, or sent but not yet acknowledged, are kept
 *   and re-sent with their original `ref` once their room is joined again; the
 *   server acknowledges a repeated `ref` without publishing it twice.
 *
 * See docs/js-client.md for the full reference.
 *
 * @module trio-chat
 */

/** The WebSocket subprotocol this client speaks. */
export const PROTOCOL = "trio-chat.v1";

/**
 * Connection states, as reported by the `state` event and `client.state`.
 * @readonly
 * @enum {string}
 */
export const State = Object.freeze({
  /** Created, `connect()` not called yet. */
  IDLE: "idle",
  /** Opening a WebSocket and waiting for the server's `welcome`. */
  CONNECTING: "connecting",
  /** `welcome` received: frames flow. */
  ONLINE: "online",
  /** The connection was lost; waiting before the next attempt. */
  RECONNECTING: "reconnecting",
  /** Stopped: `close()` was called, the reconnect attempts ran out, or the server refused this user (see `client.refused`). */
  OFFLINE: "offline",
});

/**
 * @typedef {object} ClientOptions
 * @property {string} [user] Anonymous mode: the user id to connect as (`?user=`).
 *   Without `user` or `token` the server assigns a `guest-…` id, which the
 *   client then keeps for its later reconnects.
 * @property {string} [key] Anonymous mode: this browser's key, sent as `?key=`
 *   (8 to 64 of `A-Z a-z 0-9 _ -`): the server keeps a name (or the `guest-…` id it
 *   assigned) for the key that used it first. Default: a random key of this client's
 *   own, so its reconnects keep the name (a reload, with a new client, does not).
 * @property {string | (() => string | Promise<string>)} [token] A JWT sent as
 *   `?token=`; a function is called before every connection attempt, so it can
 *   hand out a fresh token.
 * @property {"exponential" | "fixed"} [backoff="exponential"] Reconnect delay policy.
 * @property {number} [baseDelayMs=500] Exponential backoff: the first delay's upper bound.
 * @property {number} [maxDelayMs=30000] Exponential backoff: the cap on any delay.
 * @property {number} [reconnectInterval=1000] Fixed backoff: the delay between attempts, in ms.
 * @property {number} [maxReconnectAttempts=Infinity] Reconnect attempts in a row (after the first
 *   connection attempt) before giving up (state `offline`).
 * @property {number} [resetAfterMs=10000] A connection that stays up this long resets the backoff.
 * @property {number} [connectTimeoutMs=10000] Give up on an attempt with no `welcome` after this long.
 * @property {number} [maxSendAttempts=5] A message whose connection dropped this many times
 *   before it was acknowledged is given up (error code 0), so one bad message cannot loop forever.
 * @property {boolean} [retryRateLimited=true] On a 429 error keep the message and re-send it
 *   (with the same `ref`) after `retry_after_ms`; otherwise fail it.
 * @property {boolean} [pace=true] Keep chat and direct sends within the rate the server announces
 *   in `welcome` (`limits.rate`), queueing the excess instead of drawing 429 errors.
 * @property {boolean} [watchNetwork=true] In a browser, retry at once when the `online` event fires.
 * @property {string[]} [protocols] WebSocket subprotocols to offer (default: `["trio-chat.v1"]`).
 * @property {() => number} [random=Math.random] Source of jitter (replace it in tests).
 * @property {typeof WebSocket} [WebSocket] The WebSocket class to use.
 * @property {typeof fetch | false} [fetch] How to ask the server why a connection attempt failed
 *   (a plain GET of the same URL answers the handshake's refusal): by default `fetch`, when the
 *   global WebSocket is used; `false`: never ask (a refusal then looks like any failed attempt).
 */

const DEFAULTS = Object.freeze({
  user: undefined,
  key: undefined,
  token: undefined,
  backoff: "exponential",
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  reconnectInterval: 1_000,
  maxReconnectAttempts: Infinity,
  resetAfterMs: 10_000,
  connectTimeoutMs: 10_000,
  maxSendAttempts: 5,
  retryRateLimited: true,
  pace: true,
  watchNetwork: true,
  protocols: [PROTOCOL],
  random: Math.random,
  WebSocket: undefined,
  fetch: undefined,
});

/** Refusals of a handshake that another attempt would get again. */
const REFUSED_FOR_GOOD = new Set([400, 401, 403, 404, 409]);

/** Extra room, in ms, added to the server's rate window when pacing sends. */
const PACE_MARGIN_MS = 100;

/** How many delivered ids each room remembers to drop duplicates (a safety net). */
const SEEN_IDS_KEPT = 1_000;

/** At most one `read` marker per room or conversation goes out in this many ms. */
const READ_EVERY_MS = 1_000;

/** The frames a client sends whose answer is an event carrying the frame's `ref`. */
const COUNTED_AS_CHAT = new Set(["edit", "delete", "react", "history", "rooms", "topic"]);

/**
 * `{room}` or `{with}` for a target: a room name (a string), `{room: "lobby"}`,
 * or `{with: "bob"}` (the other user of a direct conversation).
 */
function where(target) {
  if (typeof target === "string") return { room: target };
  if (typeof target?.room === "string") return { room: target.room };
  if (typeof target?.with === "string") return { with: target.with };
  throw new TypeError("a target is a room name, {room} or {with}");
}

/** The key of a room or conversation in the client's maps. */
function keyOf(payload) {
  return typeof payload.with === "string" ? `with:${payload.with}` : `room:${payload.room}`;
}

/**
 * The delay before reconnect attempt number `attempt` (0 for the first retry),
 * with "full jitter": a uniform random value in [0, min(max, base * 2^attempt)).
 *
 * @param {number} attempt
 * @param {{baseDelayMs?: number, maxDelayMs?: number, random?: () => number}} [options]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}) {
  const { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs, random = Math.random } = options;
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * ceiling);
}

/**
 * An error reported by the server (`error` frame) or found by the client
 * before sending. `code` follows the protocol's HTTP-like codes (400, 403,
 * 404, 413, 429, 500); code 0 means the message could not be delivered.
 */
export class ChatError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   * @param {{ref?: string, retryAfterMs?: number, request?: object}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "ChatError";
    /** @type {number} */
    this.code = code;
    /** @type {string | undefined} the `ref` of the frame this answers */
    this.ref = extra.ref;
    /** @type {number | undefined} for 429: how long to wait */
    this.retryAfterMs = extra.retryAfterMs;
    /** @type {object | undefined} what was being sent: `{type, room?, to?, content?}` */
    this.request = extra.request;
  }
}

/** Random hex, from `crypto.getRandomValues` (available outside secure contexts too). */
function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Length in Unicode code points, the unit the server counts content in. */
function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

const utf8 = new TextEncoder();

/**
 * A room this client wants to be in, and what it has seen there.
 * @private
 */
class RoomState {
  constructor(name) {
    this.name = name;
    /** True between our `join` being answered and the connection dropping. */
    this.joined = false;
    /** True once the room has answered at least one `join`. */
    this.everJoined = false;
    /** Every message up to this id has been delivered (the `since` to resume from). */
    this.lastId = 0;
    /** Set once `lastId` means something (after a first message or `joined`). */
    this.anchored = false;
    /** The highest id delivered. */
    this.maxId = 0;
    /** Recently delivered ids, to drop duplicates. */
    this.seen = new Set();
    /** The time (epoch ms) of the newest message delivered. */
    this.newestTime = -Infinity;
    /** user id -> true, for the room's current members. */
    this.members = new Set();
    /** Callbacks waiting for `joined`. */
    this.waiters = [];
    /** The latest `joined` payload (without history). */
    this.info = null;
    /** The room's numbering as the server last named it (`joined.epoch`), or null. */
    this.epoch = null;
  }

  /** Was a message with this id delivered already? */
  #known(id) {
    return this.seen.has(id) || (this.anchored && id <= this.lastId);
  }

  /**
   * A message whose id was already used, but newer than anything delivered:
   * the room's ids started over (a server without persistence restarted).
   * A true duplicate is never newer than the newest message seen.  Only a
   * guess for servers that do not name their numbering: with `joined.epoch`
   * the server says so itself.
   */
  restarted(id, time) {
    return this.epoch === null && this.#known(id) && Date.parse(time) > this.newestTime;
  }

  /** Forget the old numbering, keeping the room and its members. */
  restart() {
    this.lastId = 0;
    this.maxId = 0;
    this.anchored = false;
    this.seen.clear();
  }

  /** Record a message; false when it was delivered already. */
  accept(id, time) {
    if (this.#known(id)) return false;
    this.seen.add(id);
    const at = Date.parse(time);
    if (at > this.newestTime) this.newestTime = at;
    if (this.seen.size > 2 * SEEN_IDS_KEPT) {
      for (const old of this.seen) {
        this.seen.delete(old);
        if (this.seen.size <= SEEN_IDS_KEPT) break;
      }
    }
    this.maxId = Math.max(this.maxId, id);
    if (!this.anchored) {
      this.lastId = id;
      this.anchored = true;
    }
    while (this.seen.has(this.lastId + 1)) this.lastId++;
    return true;
  }

  /** After a `joined`: the server sent everything it retains after `since`. */
  caughtUp() {
    if (this.maxId > this.lastId) this.lastId = this.maxId;
    if (this.maxId > 0) this.anchored = true;
  }
}

/**
 * A direct conversation this client has seen: the ids it delivered.
 * @private
 */
class ConversationState {
  constructor(peer) {
    this.peer = peer;
    /** The highest id delivered (the `since` to resume from). */
    this.maxId = 0;
    /** Recently delivered ids, to drop duplicates. */
    this.seen = new Set();
    /** True once its retained history was asked for (`openConversation`). */
    this.loaded = false;
  }

  /** Record a message; false when it was delivered already. */
  accept(id) {
    if (typeof id !== "number") return true; // a server without stored conversations
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > 2 * SEEN_IDS_KEPT) {
      for (const old of this.seen) {
        this.seen.delete(old);
        if (this.seen.size <= SEEN_IDS_KEPT) break;
      }
    }
    this.maxId = Math.max(this.maxId, id);
    return true;
  }
}

/**
 * A trio_chat connection that survives network drops without losing or
 * repeating messages.
 *
 * Events (each a `CustomEvent`; read `event.detail`):
 *
 * | event      | detail |
 * |------------|--------|
 * | `state`    | `{state, previous, attempt, delayMs?, retryAt?, closeCode?, gaveUp?, refused?, reason?}` (`refused`: `{status, reason}` when the server turned this user away for good; `reason`: why the last attempt failed, when the server said) |
 * | `welcome`  | `{userId, sessionId, limits, reconnected}` |
 * | `joined`   | `{room, members, truncated, rejoined, read, unread, mentions, topic}` (history arrives as `message` events first) |
 * | `left`     | `{room, removed}` (`removed`: not asked for, a moderator closed the room; it is not joined again) |
 * | `message`  | `{id, room, user_id, content, time, own, ref?, replayed, edited?, deleted?, reactions?, mentions?}` |
 * | `edit`     | `{room \| with, id, user_id, content, edited}` a message's text was replaced |
 * | `delete`   | `{room \| with, id, user_id, by}` a message was deleted (now a tombstone) |
 * | `reaction` | `{room \| with, id, emoji, user_id, on, count}` a reaction was toggled |
 * | `read`     | `{room \| with, id}` this user's read marker moved (from any of their connections) |
 * | `topic`    | `{room, topic, user_id}` a room's topic was set (`""`: cleared) |
 * | `conversations` | `{conversations, truncated}` the answer to `conversations()` |
 * | `system`   | `{event: "join" \| "leave" \| "kick" \| "ban" \| "mute" \| "unmute" \| "topic", room, user_id, text?}` |
 * | `members`  | `{room, members: [{userId, status, text?}]}` whenever a member list changes |
 * | `presence` | `{user_id, status, text?}` |
 * | `direct`   | `{id?, from, to, peer, content, time, own, replayed, ref?, edited?, deleted?, reactions?, mentions?}` (own: sent by this user; peer: the other user) |
 * | `typing`   | `{room, user_id}`, or `{with, user_id}` for someone typing to this user |
 * | `restart`  | `{room}` the room's ids started over (a server without persistence restarted; never after a restart with the SQLite store, where ids continue) |
 * | `pending`  | `{ref, type: "chat" \| "direct", room?, to?, content}` a message was queued |
 * | `sent`     | `{ref, type, ack}` a queued message was acknowledged |
 * | `error`    | `{code, message, ref?, retryAfterMs?, request?, willRetry}` |
 *
 * @extends EventTarget
 */
export class TrioChatClient extends EventTarget {
  /** @type {string} */ #url;
  /** @type {Required<ClientOptions>} */ #options;
  /** @type {string} */ #state = State.IDLE;
  /** @type {WebSocket | null} */ #ws = null;
  #serial = 0; // counts connections; an outbox entry remembers which one it was sent on
  #attempt = 0; // failed attempts in a row, for the backoff
  #everOnline = false;
  #gaveUp = false;
  /** @type {{status: number, reason: string} | null} */ #refused = null;
  #retryTimer = null;
  #retryAt = 0;
  #resetTimer = null;
  #connectTimer = null;
  #flushTimer = null;
  #pausedUntil = 0;
  #sentTimes = []; // when recent chat, direct and presence frames went out, for pacing
  #userId = null;
  #sessionId = null;
  #limits = null;
  #pinnedUser = undefined;
  /** @type {Map<string, RoomState>} */ #rooms = new Map();
  /** @type {Map<string, {status: string, text?: string}>} */ #presence = new Map();
  /** @type {Array<object>} */ #outbox = [];
  /** @type {Map<string, {resolve: Function}>} */ #leaving = new Map();
  /** @type {Map<string, string>} ref of a `join` frame -> room */ #joinRefs = new Map();
  /** @type {Map<string, {resolve: Function, reject: Function}>} ref of a `command` or a request -> its call */ #calls = new Map();
  /** @type {Map<string, ConversationState>} user id -> the direct conversation with them */ #conversations = new Map();
  /** @type {Map<string, {payload: object, sentAt: number, timer: any, dirty: boolean}>} read markers, per room or conversation */ #reads = new Map();
  /** @type {Map<string, string>} ref -> kind, of frames whose refusal is not news (`read`, `typing` to a user) */ #quiet = new Map();
  /** @type {Set<string>} the kinds of quiet frames this server refused as unknown (400) or not offered (501) */ #unsupported = new Set();
  #ownPresence = null;
  #refPrefix = randomHex(12);
  #key;
  #refCounter = 0;
  #onNetworkOnline = () => this.retryNow();

  /**
   * @param {string} url The WebSocket endpoint, e.g. `ws://127.0.0.1:8080/ws`.
   *   Relative URLs (`/ws`) resolve against the page's location, with `ws:` or `wss:`
   *   to match `http:` or `https:`.
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#options = { ...DEFAULTS, ...options };
    this.#pinnedUser = this.#options.user;
    this.#key = this.#options.key || randomHex(16);
  }

  // ---------------------------------------------------------------- status

  /** The connection state: one of {@link State}. */
  get state() {
    return this.#state;
  }

  /** The user id the server gave this connection (null before the first `welcome`). */
  get userId() {
    return this.#userId;
  }

  /** The current session id (changes on every reconnect). */
  get sessionId() {
    return this.#sessionId;
  }

  /**
   * Why the server turned this client away for good (a bad or expired token,
   * a name another browser holds): `{status, reason}`, or null.  The client
   * stops (state `offline`) and fails what was queued; `connect()` tries again.
   */
  get refused() {
    return this.#refused;
  }

  /** The server's limits from `welcome` (null before the first one). */
  get limits() {
    return this.#limits;
  }

  /** The rooms this client is in, or is about to (re-)join. */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  /** Messages queued or sent but not acknowledged yet: `[{ref, type, room?, to?, content}]`. */
  get pending() {
    return this.#outbox.map((entry) => entry.describe());
  }

  /**
   * The last message id seen in `room` with nothing missing before it: what the
   * client passes as `since` when it re-joins. 0 when nothing was seen.
   * @param {string} room
   */
  lastId(room) {
    return this.#rooms.get(room)?.lastId ?? 0;
  }

  /**
   * The members of `room` with their presence, sorted by user id.
   * @param {string} room
   * @returns {Array<{userId: string, status: string, text?: string}>}
   */
  members(room) {
    const state = this.#rooms.get(room);
    if (!state) return [];
    return [...state.members].sort().map((userId) => this.#memberInfo(userId));
  }

  /**
   * The users this client has direct conversations with (seen, listed or opened).
   * @returns {string[]}
   */
  get conversationPeers() {
    return [...this.#conversations.keys()];
  }

  // ------------------------------------------------------------ connection

  /** Start connecting (again, after `close()` or after giving up). */
  connect() {
    if (this.#state === State.CONNECTING || this.#state === State.ONLINE || this.#state === State.RECONNECTING) return;
    this.#attempt = 0;
    this.#gaveUp = false;
    this.#refused = null;
    if (this.#options.watchNetwork && typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this.#onNetworkOnline);
    }
    this.#open();
  }

  /**
   * Close the connection and stop reconnecting. Rooms and unacknowledged
   * messages are kept: a later `connect()` resumes where this one stopped.
   * @param {number} [code=1000]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    if (this.#state === State.OFFLINE || this.#state === State.IDLE) return;
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.#onNetworkOnline);
    }
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      this.#connectionLost();
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this.#setState(State.OFFLINE, { closeCode: code });
  }

  /** While waiting to reconnect, or after giving up, try again now. */
  retryNow() {
    if (this.#state === State.RECONNECTING) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
      this.#open();
    } else if (this.#state === State.OFFLINE && this.#gaveUp) {
      this.connect();
    }
  }

  async #open() {
    const serial = ++this.#serial;
    this.#setState(State.CONNECTING, { attempt: this.#attempt });
    let url;
    try {
      url = await this.#buildUrl();
    } catch (error) {
      this.#emit("error", { code: 0, message: `could not get a token: ${error?.message ?? error}`, willRetry: true });
      if (serial === this.#serial && this.#state === State.CONNECTING) this.#scheduleReconnect(undefined);
      return;
    }
    if (serial !== this.#serial || this.#state !== State.CONNECTING) return; // closed meanwhile
    const WebSocketClass = this.#options.WebSocket ?? globalThis.WebSocket;
    let ws;
    try {
      ws = new WebSocketClass(url, this.#options.protocols);
    } catch (error) {
      this.#emit("error", { code: 0, message: `cannot open ${url}: ${error?.message ?? error}`, willRetry: false });
      this.close();
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this.#ws) this.#onClose(event);
    };
    ws.onerror = () => {}; // a close event always follows
    this.#connectTimer = setTimeout(() => {
      if (ws === this.#ws && this.#state === State.CONNECTING) ws.close();
    }, this.#options.connectTimeoutMs);
  }

  async #buildUrl() {
    const location = globalThis.location;
    const url = new URL(this.#url, location?.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    let token = this.#options.token;
    if (typeof token === "function") token = await token();
    if (token) {
      url.searchParams.set("token", token);
    } else {
      if (this.#pinnedUser) url.searchParams.set("user", this.#pinnedUser);
      url.searchParams.set("key", this.#key);
    }
    return url.href;
  }

  #onClose(event) {
    const url = this.#ws?.url;
    const beforeWelcome = this.#state === State.CONNECTING;
    this.#ws = null;
    this.#clearTimers();
    this.#connectionLost();
    const fetcher = this.#options.fetch ?? (this.#options.WebSocket ? false : globalThis.fetch);
    if (!beforeWelcome || !fetcher || !url) {
      this.#scheduleReconnect(event.code);
      return;
    }
    // Browsers hide a refused handshake's status and reason from pages: ask
    // again with a plain GET, which the server answers with the same refusal
    // (or 426 when it would have accepted).
    const serial = this.#serial;
    this.#askWhy(fetcher, url).then((answer) => {
      if (serial !== this.#serial || this.#state !== State.CONNECTING) return; // closed meanwhile
      if (answer && REFUSED_FOR_GOOD.has(answer.status)) this.#turnedAway(answer);
      else this.#scheduleReconnect(event.code, answer?.reason);
    });
  }

  /** The server's answer to a plain GET of the WebSocket URL: `{status, reason}`, or null. */
  async #askWhy(fetcher, wsUrl) {
    const url = new URL(wsUrl);
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#options.connectTimeoutMs);
    try {
      const response = await fetcher.call(globalThis, url.href, { cache: "no-store", credentials: "omit", signal: abort.signal });
      if (response.status === 426) return null; // it would be accepted now
      const text = (await response.text()).trim().split("\n")[0].slice(0, 200);
      return { status: response.status, reason: text || `HTTP ${response.status}` };
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The server turned this user away: stop, and fail what was waiting to be sent. */
  #turnedAway(answer) {
    this.#refused = { status: answer.status, reason: answer.reason };
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this.#onNetworkOnline);
    }
    for (const entry of [...this.#outbox]) {
      this.#fail(entry, new ChatError(0, answer.reason, { ref: entry.ref, request: entry.describe() }));
    }
    this.#setState(State.OFFLINE, { refused: this.#refused });
  }

  /** Forget per-connection state; keep what must survive the reconnect. */
  #connectionLost() {
    for (const room of this.#rooms.values()) room.joined = false;
    for (const entry of this.#outbox) {
      if (entry.sentOn !== null) {
        entry.sentOn = null;
        entry.drops++;
      }
    }
    for (const [room, { resolve }] of this.#leaving) resolve({ room });
    this.#leaving.clear();
    for (const [ref, call] of this.#calls) call.reject(new ChatError(0, "the connection was lost before the answer", { ref, request: call.request }));
    for (const marker of this.#reads.values()) {
      clearTimeout(marker.timer);
      marker.timer = null;
    }
    this.#calls.clear();
    this.#joinRefs.clear();
    this.#sessionId = null;
  }

  #scheduleReconnect(closeCode, reason) {
    const options = this.#options;
    if (this.#attempt >= options.maxReconnectAttempts) {
      this.#gaveUp = true;
      this.#setState(State.OFFLINE, { closeCode, gaveUp: true });
      return;
    }
    const delayMs =
      options.backoff === "fixed"
        ? options.reconnectInterval
        : backoffDelay(this.#attempt, options);
    this.#attempt++;
    this.#retryAt = Date.now() + delayMs;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#open();
    }, delayMs);
    const extra = { closeCode, delayMs, retryAt: this.#retryAt };
    if (reason) extra.reason = reason;
    this.#setState(State.RECONNECTING, extra);
  }

  #clearTimers() {
    for (const timer of [this.#retryTimer, this.#resetTimer, this.#connectTimer, this.#flushTimer]) {
      clearTimeout(timer);
    }
    this.#retryTimer = this.#resetTimer = this.#connectTimer = this.#flushTimer = null;
  }

  #setState(state, extra = {}) {
    const previous = this.#state;
    this.#state = state;
    this.#emit("state", { state, previous, attempt: this.#attempt, ...extra });
  }

  // --------------------------------------------------------------- actions

  /**
   * Join `room` (idempotent). The client re-joins it after every reconnect
   * until `leave(room)`. Resolves with the `joined` payload (without the
   * history, which arrives as `message` events with `replayed: true`).
   * @param {string} room
   * @returns {Promise<{room: string, members: string[], truncated: boolean}>}
   */
  join(room) {
    let state = this.#rooms.get(room);
    if (state?.joined) return Promise.resolve({ ...state.info });
    if (!state) {
      state = new RoomState(room);
      this.#rooms.set(room, state);
      if (this.#state === State.ONLINE) this.#sendJoin(state);
    }
    return new Promise((resolve, reject) => state.waiters.push({ resolve, reject }));
  }

  /**
   * Leave `room`. Messages still queued for it are given up (their promises
   * reject with a ChatError of code 0).
   * @param {string} room
   * @returns {Promise<{room: string}>}
   */
  leave(room) {
    const state = this.#rooms.get(room);
    if (!state) return Promise.resolve({ room });
    this.#forgetRoom(room, state);
    if (this.#state !== State.ONLINE || !state.joined) return Promise.resolve({ room });
    return new Promise((resolve) => {
      this.#leaving.set(room, { resolve });
      this.#sendFrame("leave", { room });
    });
  }

  /**
   * Send `content` to `room`. The message is queued at once (see the `pending`
   * event) and kept until the server acknowledges it, across reconnects.
   * Resolves with the ack `{id, room, time, ref}`; rejects with a ChatError.
   * @param {string} room
   * @param {string} content
   * @returns {Promise<{id: number, room: string, time: string, ref: string}>}
   */
  send(room, content) {
    if (!this.#rooms.has(room)) {
      return this.#refuse(new ChatError(403, `join ${room} before sending to it`, { request: { type: "chat", room, content } }));
    }
    return this.#enqueue("chat", { room, content });
  }

  /**
   * Send a direct message to user `to` (all of their connections). Queued and
   * re-sent like `send()`. Resolves with the ack `{to, time, ref}`.
   * @param {string} to
   * @param {string} content
   * @returns {Promise<{to: string, time: string, ref: string}>}
   */
  direct(to, content) {
    return this.#enqueue("direct", { to, content });
  }

  /**
   * Set this user's presence. Remembered and sent again after a reconnect.
   * @param {string} status `online`, `away`, `busy` or any string of at most 32 characters
   * @param {string} [text]
   */
  setPresence(status, text) {
    this.#ownPresence = text ? { status, text } : { status };
    if (this.#state === State.ONLINE) this.#sendPresence();
    if (this.#userId) this.#onPresence({ user_id: this.#userId, ...this.#ownPresence });
  }

  /**
   * Tell the room's other members this user is typing. Ephemeral: dropped
   * when not online.
   * @param {string} room
   */
  typing(room) {
    if (this.#state === State.ONLINE && this.#rooms.get(room)?.joined) this.#sendFrame("typing", { room });
  }

  /**
   * Tell user `to` that this user is typing to them (a direct conversation).
   * Ephemeral: dropped when not online.
   * @param {string} to
   */
  typingTo(to) {
    if (this.#state === State.ONLINE && !this.#unsupported.has("typing")) this.#sendQuiet("typing", { with: to });
  }

  /**
   * Send a frame whose refusal is not the user's business: a server that does
   * not offer it (400 unknown, 501 with the Redis store) is not asked again.
   */
  #sendQuiet(kind, payload) {
    const ref = this.#newRef();
    this.#quiet.set(ref, kind);
    if (this.#quiet.size > 256) this.#quiet.delete(this.#quiet.keys().next().value);
    this.#sendFrame(kind, payload, ref);
  }

  /**
   * Replace the text of one of this user's messages. `target` is a room name,
   * `{room}` or `{with: user}` (a direct conversation). Resolves with the `edit`
   * event `{room | with, id, user_id, content, edited}`; rejects with a
   * ChatError (403: not yours, or too late; 404: not retained or deleted).
   * @param {string | {room?: string, with?: string}} target
   * @param {number} id
   * @param {string} content
   */
  edit(target, id, content) {
    const payload = { ...where(target), id, content };
    if (typeof content !== "string" || content.length === 0) {
      return this.#refuse(new ChatError(400, "content must be a non-empty string", { request: { type: "edit", ...payload } }));
    }
    const tooBig = this.#checkSize("edit", payload);
    if (tooBig) return this.#refuse(new ChatError(413, tooBig, { request: { type: "edit", ...payload } }));
    return this.#request("edit", payload);
  }

  /**
   * Delete one of this user's messages (it becomes a tombstone). Resolves with
   * the `delete` event `{room | with, id, user_id, by}`.
   * @param {string | {room?: string, with?: string}} target
   * @param {number} id
   */
  delete(target, id) {
    return this.#request("delete", { ...where(target), id });
  }

  /**
   * Toggle this user's reaction `emoji` (one of `limits.reactions`) on a
   * message. Resolves with the `reaction` event `{room | with, id, emoji,
   * user_id, on, count}`.
   * @param {string | {room?: string, with?: string}} target
   * @param {number} id
   * @param {string} emoji
   */
  react(target, id, emoji) {
    return this.#request("react", { ...where(target), id, emoji });
  }

  /**
   * Read retained messages of a room (joined) or a direct conversation: with
   * `before`, the newest ones with a smaller id (paging back); otherwise those
   * after `since`. Resolves with `{room | with, messages, truncated}`
   * (messages oldest first; at most 64 KiB of them). Nothing is emitted for
   * them: the answer is the caller's.
   * @param {string | {room?: string, with?: string}} target
   * @param {{since?: number, before?: number}} [range]
   */
  history(target, { since, before } = {}) {
    const payload = where(target);
    if (since !== undefined) payload.since = since;
    if (before !== undefined) payload.before = before;
    return this.#request("history", payload);
  }

  /**
   * The direct conversation with `user`: its retained messages (the newest
   * 64 KiB) are delivered as `direct` events with `replayed: true`, once, and
   * from then on the client resumes it after every reconnect (`since` = the
   * newest id it delivered). Resolves with `{with, truncated}`.
   * @param {string} user
   */
  async openConversation(user) {
    const state = this.#conversation(user);
    if (state.loaded) return { with: user, truncated: false };
    const answer = await this.#request("history", { with: user });
    state.loaded = true;
    for (const message of answer.messages ?? []) this.#deliverDirect(message, { replayed: true });
    return { with: user, truncated: Boolean(answer.truncated) };
  }

  /**
   * This user's direct conversations, most recent first: resolves with
   * `{conversations: [{with, last_id, read, unread, mentions, last}], truncated}`
   * (also emitted as a `conversations` event).
   */
  async conversations() {
    const answer = await this.#request("conversations", {});
    for (const item of answer.conversations ?? []) this.#conversation(item.with);
    return answer;
  }

  /**
   * The rooms there are (that this user may join), most members first:
   * resolves with `{rooms: [{room, members, topic}], truncated}`. `query` keeps
   * those whose name or topic contains it (ignoring case).
   * @param {string} [query]
   */
  findRooms(query) {
    return this.#request("rooms", query ? { query } : {});
  }

  /**
   * Set the topic of a joined room (`""` clears it). Resolves with the
   * `system` payload `{event: "topic", room, user_id, text}`.
   * @param {string} room
   * @param {string} topic
   */
  setTopic(room, topic) {
    return this.#request("topic", { room, topic });
  }

  /**
   * Record that this user has read `target` up to message `id`. Markers only
   * move forward; at most one goes out per room or conversation every second
   * (the latest wins), and one that could not go out is sent after the
   * reconnect. Every connection of the user gets a `read` event.
   * @param {string | {room?: string, with?: string}} target
   * @param {number} id
   */
  markRead(target, id) {
    const payload = { ...where(target), id };
    const key = keyOf(payload);
    let marker = this.#reads.get(key);
    if (!marker) {
      marker = { payload, highest: 0, sentAt: -Infinity, timer: null, dirty: false };
      this.#reads.set(key, marker);
    }
    if (!(id > marker.highest)) return; // a marker never moves back
    marker.highest = id;
    marker.payload = payload;
    marker.dirty = true;
    this.#sendRead(marker);
  }

  /**
   * Send now the read markers still waiting for their second. A page calls
   * it on `pagehide`, so that what was read just before a reload or a closed
   * tab is kept (the server applies a `read` that comes with the close).
   * Not online, they wait for the reconnect as before.
   */
  flushReads() {
    for (const marker of this.#reads.values()) {
      if (!marker.dirty || !marker.timer) continue;
      clearTimeout(marker.timer);
      marker.timer = null;
      marker.sentAt = -Infinity;
      this.#sendRead(marker);
    }
  }

  #sendRead(marker) {
    if (!marker.dirty || marker.timer || this.#state !== State.ONLINE) return;
    const wait = marker.sentAt + READ_EVERY_MS - Date.now();
    if (wait > 0) {
      marker.timer = setTimeout(() => {
        marker.timer = null;
        this.#sendRead(marker);
      }, wait);
      return;
    }
    marker.dirty = false;
    marker.sentAt = Date.now();
    if (!this.#unsupported.has("read")) this.#sendQuiet("read", marker.payload);
  }

  /** Send a frame whose answer carries its `ref`; resolves with the answer's payload. */
  #request(type, payload) {
    const request = { type, ...payload };
    if (this.#state !== State.ONLINE) return Promise.reject(new ChatError(0, "not connected", { request }));
    const ref = this.#newRef();
    if (COUNTED_AS_CHAT.has(type)) this.#sentTimes.push(Date.now());
    return new Promise((resolve, reject) => {
      this.#calls.set(ref, { resolve, reject, request });
      this.#sendFrame(type, payload, ref);
    });
  }

  #conversation(peer) {
    let state = this.#conversations.get(peer);
    if (!state) {
      state = new ConversationState(peer);
      this.#conversations.set(peer, state);
    }
    return state;
  }

  /**
   * Call the server's command `name` with `args` (any JSON value). Resolves
   * with its result; rejects with a ChatError carrying the server's code
   * (404: no such command, 429: too many running, 504: out of time, or the
   * command's own), or code 0 when not online or when the connection drops
   * before the result (a command is never sent twice: it may have run).
   * @param {string} name
   * @param {unknown} [args]
   * @returns {Promise<unknown>}
   */
  command(name, args) {
    const request = { type: "command", name, args };
    if (this.#state !== State.ONLINE) return Promise.reject(new ChatError(0, "not connected", { request }));
    const ref = this.#newRef();
    const payload = args === undefined ? { name } : { name, args };
    return new Promise((resolve, reject) => {
      this.#calls.set(ref, { resolve, reject, request });
      this.#sendFrame("command", payload, ref);
    });
  }

  /** A fresh `ref`: 24 random hex digits and a counter, well under the 64-character limit. */
  #newRef() {
    return `${this.#refPrefix}-${(++this.#refCounter).toString(36)}`;
  }

  #refuse(error) {
    this.#emit("error", this.#errorDetail(error, false));
    return Promise.reject(error);
  }

  #enqueue(type, payload) {
    const request = { type, ...payload };
    if (typeof payload.content !== "string" || payload.content.length === 0) {
      return this.#refuse(new ChatError(400, "content must be a non-empty string", { request }));
    }
    const tooBig = this.#checkSize(type, payload);
    if (tooBig) return this.#refuse(new ChatError(413, tooBig, { request }));
    const ref = this.#newRef();
    return new Promise((resolve, reject) => {
      const entry = {
        ref,
        type,
        payload,
        sentOn: null,
        drops: 0,
        resolve,
        reject,
        describe: () => ({ ref, ...request }),
      };
      this.#outbox.push(entry);
      this.#emit("pending", entry.describe());
      this.#flush();
    });
  }

  /** A reason the server would refuse this frame for its size, or null. */
  #checkSize(type, payload, ref = "x".repeat(40)) {
    const limits = this.#limits;
    if (!limits) return null;
    const chars = codePoints(payload.content);
    if (limits.max_content_chars && chars > limits.max_content_chars) {
      return `message too long: ${chars} characters, the limit is ${limits.max_content_chars}`;
    }
    const bytes = utf8.encode(JSON.stringify({ type, payload, ref })).length;
    if (limits.max_message_bytes && bytes > limits.max_message_bytes) {
      return `message too large: ${bytes} bytes, the limit is ${limits.max_message_bytes}`;
    }
    return null;
  }

  /** Send whatever in the outbox can go now, in order. */
  #flush() {
    if (this.#state !== State.ONLINE) return;
    const now = Date.now();
    if (this.#pausedUntil > now) return this.#flushLater(this.#pausedUntil - now);
    for (const entry of [...this.#outbox]) {
      if (entry.sentOn === this.#serial) continue;
      if (entry.type === "chat" && !this.#rooms.get(entry.payload.room)?.joined) continue;
      if (entry.drops >= this.#options.maxSendAttempts) {
        this.#fail(entry, new ChatError(0, `not acknowledged after ${entry.drops} connections`, { ref: entry.ref, request: entry.describe() }));
        continue;
      }
      const tooBig = this.#checkSize(entry.type, entry.payload, entry.ref);
      if (tooBig) {
        this.#fail(entry, new ChatError(413, tooBig, { ref: entry.ref, request: entry.describe() }));
        continue;
      }
      const wait = this.#paceDelay(now);
      if (wait > 0) return this.#flushLater(wait); // keep the order: nothing overtakes a paced message
      this.#sentTimes.push(now);
      entry.sentOn = this.#serial;
      this.#sendFrame(entry.type, entry.payload, entry.ref);
    }
  }

  #flushLater(delayMs) {
    if (this.#flushTimer) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = null;
      this.#flush();
    }, delayMs);
  }

  /**
   * How long to wait before the next message keeps within the rate the server
   * announced in `welcome` (a sliding window, slightly widened), or 0.
   */
  #paceDelay(now) {
    const rate = this.#limits?.rate;
    if (!this.#options.pace || !(rate?.messages > 0) || !(rate?.per_seconds > 0)) return 0;
    const windowMs = rate.per_seconds * 1000 + PACE_MARGIN_MS;
    const times = this.#sentTimes;
    while (times.length && times[0] <= now - windowMs) times.shift();
    return times.length < rate.messages ? 0 : times[0] + windowMs - now;
  }

  #fail(entry, error) {
    const index = this.#outbox.indexOf(entry);
    if (index >= 0) this.#outbox.splice(index, 1);
    this.#emit("error", this.#errorDetail(error, false));
    entry.reject(error);
  }

  #sendJoin(state) {
    const payload = { room: state.name };
    if (state.everJoined && state.anchored) payload.since = state.lastId;
    else if (state.everJoined) payload.since = 0;
    const ref = this.#newRef();
    this.#joinRefs.set(ref, state.name);
    this.#sendFrame("join", payload, ref);
  }

  /** Presence is never held back, but it counts against the server's rate like a message. */
  #sendPresence() {
    this.#sentTimes.push(Date.now());
    this.#sendFrame("presence", this.#ownPresence);
  }

  #sendFrame(type, payload, ref) {
    const frame = ref === undefined ? { type, payload } : { type, payload, ref };
    this.#ws.send(JSON.stringify(frame));
  }

  // -------------------------------------------------------------- incoming

  #onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not ours to judge: the protocol only sends JSON
    }
    const payload = frame?.payload ?? {};
    this.#handleFrame(frame?.type, payload, frame?.ref);
    if (frame?.ref !== undefined) this.#quiet.delete(frame.ref);
    // A request's answer is the event it caused, with the request's ref.
    if (frame?.ref !== undefined && frame.type !== "error" && frame.type !== "result") {
      this.#settleCall(frame.ref, (call) => call.resolve(payload));
    }
  }

  #handleFrame(type, payload, ref) {
    switch (type) {
      case "welcome":
        return this.#onWelcome(payload);
      case "joined":
        return this.#onJoined(payload, ref);
      case "left":
        return this.#onLeft(payload);
      case "chat":
        return this.#deliver(payload, { own: false, replayed: false });
      case "ack":
        return this.#onAck(payload, ref);
      case "system":
        return this.#onSystem(payload);
      case "presence":
        return this.#onPresence(payload);
      case "direct":
        return this.#deliverDirect(payload, { replayed: false });
      case "typing":
      case "edit":
      case "delete":
      case "reaction":
      case "conversations":
        return this.#emit(type, payload);
      case "read": {
        const marker = this.#reads.get(keyOf(payload));
        if (marker && payload.id > marker.highest) marker.highest = payload.id;
        return this.#emit("read", payload);
      }
      case "error":
        return this.#onError(payload, ref);
      case "result":
        return this.#settleCall(ref, (call) => call.resolve(payload.result));
      default:
        return; // newer server, newer frame: ignore
    }
  }

  #onWelcome(payload) {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    const reconnected = this.#everOnline;
    this.#everOnline = true;
    this.#userId = payload.user_id;
    this.#sessionId = payload.session_id;
    this.#limits = payload.limits ?? null;
    if (!this.#options.token) this.#pinnedUser = payload.user_id; // keep a guest id across reconnects
    this.#resetTimer = setTimeout(() => {
      this.#attempt = 0;
    }, this.#options.resetAfterMs);
    this.#setState(State.ONLINE);
    this.#emit("welcome", { userId: this.#userId, sessionId: this.#sessionId, limits: this.#limits, reconnected });
    for (const room of this.#rooms.values()) this.#sendJoin(room);
    // After the joins, so the room members hear it.
    if (this.#ownPresence) this.#sendPresence();
    this.#flush(); // direct messages need no room
    for (const state of this.#conversations.values()) {
      if (state.loaded || state.maxId > 0) this.#resumeConversation(state);
    }
    for (const marker of this.#reads.values()) this.#sendRead(marker);
  }

  #onJoined(payload, ref) {
    this.#joinRefs.delete(ref);
    const state = this.#rooms.get(payload.room);
    if (!state) {
      // left while the join was in flight
      if (this.#state === State.ONLINE) this.#sendFrame("leave", { room: payload.room });
      return;
    }
    const rejoined = state.everJoined;
    if (typeof payload.epoch === "string") {
      // A new epoch: the room's ids started over (e.g. a server that keeps
      // nothing restarted).  The same one: they continued, nothing was lost.
      if (state.epoch !== null && payload.epoch !== state.epoch) {
        state.restart();
        this.#emit("restart", { room: payload.room });
      }
      state.epoch = payload.epoch;
    }
    state.members = new Set(payload.members ?? []);
    for (const message of payload.history ?? []) this.#deliver(message, { own: message.user_id === this.#userId, replayed: true });
    state.caughtUp();
    state.joined = true;
    state.everJoined = true;
    state.info = {
      room: payload.room,
      members: [...state.members],
      truncated: Boolean(payload.truncated),
      read: payload.read ?? 0,
      unread: payload.unread ?? 0,
      mentions: payload.mentions ?? 0,
      topic: payload.topic ?? null,
    };
    const marker = this.#reads.get(`room:${payload.room}`);
    if (marker && state.info.read > marker.highest) marker.highest = state.info.read;
    this.#emit("joined", { ...state.info, members: [...state.info.members], rejoined });
    this.#emitMembers(state);
    for (const waiter of state.waiters.splice(0)) waiter.resolve({ ...state.info });
    this.#flush();
  }

  #onLeft(payload) {
    const waiting = this.#leaving.get(payload.room);
    this.#leaving.delete(payload.room);
    waiting?.resolve({ room: payload.room });
    // Not asked for: a moderator closed the room. It is not joined again.
    const state = waiting ? undefined : this.#rooms.get(payload.room);
    if (state) this.#forgetRoom(payload.room, state);
    this.#emit("left", { room: payload.room, removed: !waiting });
  }

  /** Stop being in `room`: its waiters and its unsent messages fail. */
  #forgetRoom(room, state) {
    this.#rooms.delete(room);
    for (const waiter of state.waiters) waiter.reject(new ChatError(0, `left ${room}`));
    for (const entry of [...this.#outbox]) {
      if (entry.type === "chat" && entry.payload.room === room) {
        this.#fail(entry, new ChatError(0, `left ${room} before the message was delivered`, { ref: entry.ref, request: entry.describe() }));
      }
    }
  }

  #deliver(message, { own, replayed, ref }) {
    const state = this.#rooms.get(message.room);
    if (!state) return false;
    if (state.restarted(message.id, message.time)) {
      state.restart();
      this.#emit("restart", { room: message.room });
    }
    if (!state.accept(message.id, message.time)) return false;
    const detail = { ...message, own, replayed };
    if (ref !== undefined) detail.ref = ref;
    this.#emit("message", detail);
    return true;
  }

  /** A direct message, once per id: `peer` is the other user, `own` says this user sent it. */
  #deliverDirect(message, { replayed, ref }) {
    const me = this.#userId;
    const to = message.to ?? me;
    const peer = message.from === me ? to : message.from;
    if (!this.#conversation(peer).accept(message.id)) return false;
    const detail = { ...message, to, peer, own: message.from === me, replayed };
    if (ref !== undefined) detail.ref = ref;
    this.#emit("direct", detail);
    return true;
  }

  /** After a reconnect: what the conversation received meanwhile. */
  #resumeConversation(state) {
    this.#request("history", { with: state.peer, since: state.maxId }).then(
      (answer) => {
        for (const message of answer.messages ?? []) this.#deliverDirect(message, { replayed: true });
      },
      () => {}, // offline again, or a server without stored conversations
    );
  }

  #onAck(payload, ref) {
    const entry = this.#outbox.find((candidate) => candidate.ref === ref);
    if (!entry) return; // an ack for a message given up on, or from before a reload
    this.#outbox.splice(this.#outbox.indexOf(entry), 1);
    const ack = { ...payload, ref };
    if (entry.type === "chat") {
      const message = {
        id: payload.id,
        room: payload.room ?? entry.payload.room,
        user_id: this.#userId,
        content: entry.payload.content,
        time: payload.time,
      };
      this.#deliver(message, { own: true, replayed: false, ref });
    } else {
      const message = { from: this.#userId, to: payload.to ?? entry.payload.to, content: entry.payload.content, time: payload.time };
      if (payload.id !== undefined) message.id = payload.id;
      this.#deliverDirect(message, { replayed: false, ref });
    }
    this.#emit("sent", { ref, type: entry.type, ack });
    entry.resolve(ack);
  }

  #onSystem(payload) {
    const state = this.#rooms.get(payload.room);
    if (state) {
      if (payload.event === "join") state.members.add(payload.user_id);
      if (payload.event === "leave") state.members.delete(payload.user_id);
    }
    if (payload.event === "leave" && ![...this.#rooms.values()].some((room) => room.members.has(payload.user_id))) {
      this.#presence.delete(payload.user_id); // their status is stale when they come back
    }
    this.#emit("system", payload);
    if (payload.event === "topic") {
      const topic = payload.text ?? "";
      if (state?.info) state.info.topic = topic || null;
      this.#emit("topic", { room: payload.room, topic, user_id: payload.user_id });
    }
    if (state) this.#emitMembers(state);
  }

  #onPresence(payload) {
    const info = { status: payload.status };
    if (payload.text) info.text = payload.text;
    const known = this.#presence.get(payload.user_id);
    if (known && known.status === info.status && known.text === info.text) return; // e.g. our own, echoed
    this.#presence.set(payload.user_id, info);
    this.#emit("presence", payload);
    for (const state of this.#rooms.values()) {
      if (state.members.has(payload.user_id)) this.#emitMembers(state);
    }
  }

  #settleCall(ref, settle) {
    const call = this.#calls.get(ref);
    if (!call) return false;
    this.#calls.delete(ref);
    settle(call);
    return true;
  }

  #onError(payload, ref) {
    const code = payload.code ?? 0;
    if (this.#quiet.has(ref)) {
      if (code === 400 || code === 501) this.#unsupported.add(this.#quiet.get(ref));
      this.#quiet.delete(ref);
      return;
    }
    if (this.#settleCall(ref, (call) => call.reject(new ChatError(code, payload.message ?? "refused", { ref, request: call.request })))) return;
    const entry = ref === undefined ? undefined : this.#outbox.find((candidate) => candidate.ref === ref);
    const retryAfterMs = payload.retry_after_ms;
    if (entry && code === 429 && this.#options.retryRateLimited) {
      entry.sentOn = null;
      this.#pausedUntil = Math.max(this.#pausedUntil, Date.now() + (retryAfterMs ?? 1000));
      const error = new ChatError(code, payload.message ?? "rate limited", { ref, retryAfterMs, request: entry.describe() });
      this.#emit("error", this.#errorDetail(error, true));
      this.#flush();
      return;
    }
    if (entry) {
      this.#fail(entry, new ChatError(code, payload.message ?? "refused", { ref, retryAfterMs, request: entry.describe() }));
      return;
    }
    if (this.#joinRefs.has(ref)) {
      const room = this.#joinRefs.get(ref);
      this.#joinRefs.delete(ref);
      const state = this.#rooms.get(room);
      if (state && !state.joined) {
        this.#rooms.delete(room);
        const error = new ChatError(code, payload.message ?? `cannot join ${room}`, { ref, request: { type: "join", room } });
        for (const waiter of state.waiters.splice(0)) waiter.reject(error);
        this.#emit("error", this.#errorDetail(error, false));
        return;
      }
    }
    this.#emit("error", this.#errorDetail(new ChatError(code, payload.message ?? "error", { ref, retryAfterMs }), false));
  }

  // ---------------------------------------------------------------- helpers

  #errorDetail(error, willRetry) {
    const detail = { code: error.code, message: error.message, willRetry };
    if (error.ref !== undefined) detail.ref = error.ref;
    if (error.retryAfterMs !== undefined) detail.retryAfterMs = error.retryAfterMs;
    if (error.request !== undefined) detail.request = error.request;
    return detail;
  }

  #memberInfo(userId) {
    return { userId, status: "online", ...this.#presence.get(userId) };
  }

  #emitMembers(state) {
    this.#emit("members", { room: state.name, members: this.members(state.name) });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export default TrioChatClient;
