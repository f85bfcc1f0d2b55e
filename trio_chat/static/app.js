// The trio chat page: wires TrioChatClient events to the DOM.
//
// Every piece of user-supplied text (names, room names, messages, statuses,
// server error messages) reaches the page through textContent or text nodes,
// never through innerHTML. The page's other modules: dom.js (building
// elements), store.js (what the browser remembers), conversation.js (a
// conversation's log and its messages), notify.js (desktop notifications),
// discover.js (the room discovery dialog).

import { TrioChatClient, State } from "/trio-chat.js";
import { $, h, avatar, codePoints, seconds, statusLabel, findMentions } from "/static/dom.js";
import {
  USER_ID, ROOM_NAME, STORAGE, storage, remembered, remember, forget, rememberSession,
  rememberedSession, browserKey, loadRooms, closedConversations, rememberClosed,
} from "/static/store.js";
import { Conversation, DEFAULT_REACTIONS } from "/static/conversation.js";
import { notifications, renderBell } from "/static/notify.js";
import { RoomBrowser } from "/static/discover.js";

const TYPING_SHOWN_MS = 4000;
const TYPING_SENT_EVERY_MS = 2500;
const BACK_SOON_MS = 60 * 1000; // someone who leaves and comes back this soon was only reconnecting
const COMMANDS = [
  ["/join ROOM", "join a room (or switch to it)"],
  ["/leave [ROOM]", "leave this room, or ROOM"],
  ["/rooms [QUERY]", "find rooms to join, by name or topic"],
  ["/topic TEXT", "set this room's topic (/topic alone shows it)"],
  ["/dm USER TEXT", "send USER a direct message"],
  ["/me ACTION", "say what you are doing: /me waves"],
  ["/edit [TEXT]", "edit your last message (or hover a message: ✎)"],
  ["/status STATUS", "set your status: online, away, busy or your own words"],
  ["/help", "this list"],
];

// ---------------------------------------------------------------------- UI

const ui = {
  client: null,
  token: null,
  me: null,
  conversations: new Map(),
  active: null,
  presence: new Map(), // user id -> {status, text}
  countdown: null,
  lastTypingSent: 0,
  connectFailures: 0,

  // ----- sign in / out

  start({ user, token, room, resumed = false }) {
    this.reset();
    const client = new TrioChatClient("/ws", {
      user: user || undefined,
      token: token || undefined,
      key: token ? undefined : browserKey(),
    });
    this.client = client;
    this.token = token || null;
    this.me = user || null;
    this.connectFailures = 0;
    for (const [type, handler] of Object.entries(this.handlers)) {
      client.addEventListener(type, (event) => handler.call(this, event.detail));
    }
    $("login").hidden = true;
    $("app").hidden = false;
    $("me-name").textContent = user || "signing in…";
    $("me-status").value = "online";
    $("me-dot").dataset.status = "online";
    $("login-error").textContent = "";
    this.setMembersOpen(window.matchMedia("(min-width: 1100px)").matches);

    const saved = loadRooms();
    const rooms = new Set([room, ...saved].filter(Boolean));
    // Rooms carried over from before a reload are not news: no "You joined".
    for (const name of rooms) this.joinRoom(name, { select: name === room, announce: !resumed && !saved.includes(name) });
    client.connect();
    $("composer-input").focus();
  },

  /** Back to the sign-in card; *why* (the server's refusal) is shown on it. */
  signOut(why = "") {
    this.client?.close();
    this.reset();
    $("me-status").disabled = false;
    forget(STORAGE.session);
    $("login-token").value = "";
    $("app").hidden = true;
    $("login").hidden = false;
    document.body.dataset.connection = "idle";
    $("login-error").textContent = why;
    $("login-name").focus();
  },

  reset() {
    clearInterval(this.countdown);
    this.client = null;
    this.conversations.clear();
    this.active = null;
    this.presence.clear();
    $("messages").replaceChildren();
    $("room-list").replaceChildren();
    $("dm-list").replaceChildren();
    $("member-list").replaceChildren();
    $("typing").textContent = "";
    this.renderHeader();
    document.title = "trio chat";
  },

  // ----- conversations

  conversation(kind, name, { create = true } = {}) {
    const key = `${kind}:${name}`;
    let conv = this.conversations.get(key);
    if (!conv && create) {
      conv = new Conversation(kind, name, this.actions);
      this.conversations.set(key, conv);
      $("messages").append(conv.log);
      const list = kind === "room" ? $("room-list") : $("dm-list");
      const sorted = [...list.children].find((li) => li.dataset.conv > key);
      list.insertBefore(conv.item, sorted ?? null);
      $("dm-hint").hidden = $("dm-list").children.length > 0;
    }
    return conv ?? null;
  },

  joinRoom(name, { select = true, announce = true } = {}) {
    // Refused, or closed by a moderator, and still shown: joined afresh.
    if (this.conversations.get(`room:${name}`)?.refused) this.dropConversation(`room:${name}`);
    const known = this.conversations.has(`room:${name}`);
    const conv = this.conversation("room", name);
    if (!known) conv.announce = announce;
    if (select || !this.active) this.select(conv.key);
    this.client.join(name).then(
      () => this.saveRooms(),
      (error) => {
        if (error?.code === 0) return; // left, or signed out, before the answer
        // Refused: out of the sidebar; the pane stays (if open) to say why.
        conv.refused = error?.message ?? "refused";
        conv.item.remove();
        this.saveRooms();
        if (this.active === conv.key) this.renderHeader();
      },
    );
    this.saveRooms();
  },

  leaveRoom(name) {
    this.client.leave(name).catch(() => {});
    this.dropConversation(`room:${name}`);
    this.saveRooms();
  },

  openDirect(user) {
    if (user === this.me) return;
    this.reopen(user);
    const conv = this.conversation("dm", user);
    this.renderDmStatus(user);
    this.select(conv.key);
    $("composer-input").focus();
  },

  /** A closed direct conversation is back in the sidebar. */
  reopen(peer) {
    const closed = closedConversations(this.me);
    if (!(peer in closed)) return;
    delete closed[peer];
    rememberClosed(this.me, closed);
  },

  /** Load a direct conversation's retained history, once (when it is first shown). */
  loadConversation(conv) {
    if (conv.kind !== "dm" || conv.loaded || this.client?.state !== State.ONLINE) return;
    conv.loaded = true;
    this.client.openConversation(conv.name).then(
      ({ truncated }) => {
        if (truncated) this.withAutoScroll(conv, () => conv.addNotice("Older messages are not shown."));
        if (conv.unread) conv.markNewAfter(conv.read, this.me);
        if (this.active === conv.key) this.scrollToBottom();
      },
      () => {
        conv.loaded = false; // offline again: the next look tries again
      },
    );
  },

  /** The sidebar's direct conversations, from the server's list (with their unread counts). */
  async refreshConversations() {
    const client = this.client;
    let answer;
    try {
      answer = await client.conversations();
    } catch {
      return; // offline again, or a server that keeps no conversations
    }
    if (client !== this.client) return;
    const closed = closedConversations(this.me);
    for (const item of answer.conversations ?? []) {
      const peer = item.with;
      if (peer in closed && !(item.last_id > closed[peer])) continue; // closed, and nothing new since
      this.reopen(peer);
      const conv = this.conversation("dm", peer);
      conv.read = Math.max(conv.read, item.read ?? 0);
      if (!this.watching(conv)) conv.setUnread(item.unread ?? 0, item.mentions ?? 0);
      this.renderDmStatus(peer);
    }
    this.updateTitle();
    if (this.current?.kind === "dm") this.loadConversation(this.current);
  },

  /** Is the reader looking at *conv* now? */
  watching(conv) {
    return conv.key === this.active && !document.hidden;
  },

  /** Tell the server (throttled by the client) that the reader has seen the open conversation. */
  markSeen() {
    const conv = this.current;
    if (!conv || !this.client || document.hidden || conv.maxId === 0 || conv.refused) return;
    const box = $("messages");
    if (box.scrollHeight - box.scrollTop - box.clientHeight > 120) return;
    if (conv.unread) {
      conv.setUnread(0);
      this.updateTitle();
    }
    if (conv.maxId > conv.read) {
      conv.read = conv.maxId;
      this.client.markRead(conv.target, conv.maxId);
    }
  },

  /** The conversation an event names with `room` or `with`, if the page shows it. */
  convFor(payload) {
    return typeof payload.with === "string"
      ? this.conversation("dm", payload.with, { create: false })
      : this.conversation("room", payload.room, { create: false });
  },

  /** What a message's own controls do (conversation.js calls these). */
  actions: {
    me: () => ui.me,
    reactions: () => ui.client?.limits?.reactions ?? DEFAULT_REACTIONS,
    select: (conv) => ui.select(conv.key),
    react: (conv, id, emoji) => ui.request(conv, () => ui.client.react(conv.target, id, emoji)),
    edit: (conv, id, content) => ui.request(conv, () => ui.client.edit(conv.target, id, content)),
    remove: (conv, id) => ui.request(conv, () => ui.client.delete(conv.target, id)),
  },

  /** Run a request; its refusal is said in the conversation. */
  request(conv, send) {
    if (!this.client) return;
    send().catch((error) => {
      const text = error.code ? `${error.message} (${error.code})` : `not done: ${error.message}`;
      this.withAutoScroll(conv, () => conv.addNotice(text, { kind: "error" }));
    });
  },

  dropConversation(key) {
    const conv = this.conversations.get(key);
    if (!conv) return;
    if (conv.kind === "dm" && this.me) {
      // Closed until a new message comes (the server's list still has it).
      const closed = closedConversations(this.me);
      closed[conv.name] = conv.maxId;
      rememberClosed(this.me, closed);
    }
    conv.log.remove();
    conv.item.remove();
    this.conversations.delete(key);
    $("dm-hint").hidden = $("dm-list").children.length > 0;
    if (this.active === key) {
      const next = [...this.conversations.keys()][0] ?? null;
      this.active = null;
      if (next) this.select(next);
      else this.renderHeader();
    }
  },

  saveRooms() {
    const rooms = [...this.conversations.values()].filter((c) => c.kind === "room" && !c.refused).map((c) => c.name);
    remember(STORAGE.rooms, JSON.stringify(rooms));
  },

  select(key) {
    const conv = this.conversations.get(key);
    if (!conv) return;
    const previous = this.conversations.get(this.active);
    if (previous) {
      previous.log.hidden = true;
      previous.item.classList.remove("active");
      previous.button.removeAttribute("aria-current");
    }
    if (previous?.refused && previous !== conv) this.dropConversation(previous.key);
    else if (previous !== conv) previous?.clearNew();
    this.active = key;
    conv.log.hidden = false;
    conv.item.classList.add("active");
    conv.button.setAttribute("aria-current", "page");
    conv.setUnread(0);
    this.updateTitle();
    this.renderHeader();
    this.renderMembers();
    this.renderTyping();
    this.setSidebarOpen(false);
    this.hideTopicForm();
    this.loadConversation(conv);
    this.scrollToBottom();
  },

  get current() {
    return this.conversations.get(this.active) ?? null;
  },

  // ----- rendering

  renderHeader() {
    const conv = this.current;
    const input = $("composer-input");
    $("conv-title").textContent = conv ? conv.title : "No conversation";
    $("leave-room").hidden = !conv || Boolean(conv.refused);
    $("leave-room").textContent = conv?.kind === "dm" ? "Close" : "Leave";
    $("leave-room").title = conv?.kind === "dm" ? `Close the conversation with ${conv.name}` : "Leave this room";
    $("no-conv").hidden = Boolean(conv);
    $("toggle-members").hidden = !conv || conv.kind !== "room";
    $("composer").hidden = !conv;
    $("app").dataset.kind = conv?.kind ?? "none"; // the member list is for rooms only
    if (!conv) {
      $("conv-subtitle").textContent = "Join a room to start chatting";
    } else if (conv.refused) {
      $("conv-subtitle").textContent = conv.closed ? "Closed by a moderator" : `Cannot join: ${conv.refused}`;
    } else if (conv.kind === "room") {
      const n = conv.members.length;
      $("conv-subtitle").textContent = n === 0 ? "joining…" : `${n} ${n === 1 ? "member" : "members"}`;
    } else {
      const info = this.presence.get(conv.name);
      $("conv-subtitle").textContent = info ? [statusLabel(info.status), info.text].filter(Boolean).join(" · ") : "Direct message";
    }
    const isRoom = conv?.kind === "room" && !conv.refused;
    $("conv-topic").textContent = isRoom && conv.topic ? conv.topic : "";
    $("conv-topic").hidden = !(isRoom && conv.topic);
    $("edit-topic").hidden = !isRoom || conv.members.length === 0;
    const offline = this.client && this.client.state !== State.ONLINE;
    const signedOut = Boolean(this.client?.refused);
    input.disabled = Boolean(conv?.refused) || signedOut;
    $("composer-send").disabled = input.disabled;
    input.placeholder = !conv
      ? ""
      : conv.refused
        ? `You cannot post in ${conv.title}`
        : signedOut
          ? "Signed out: sign in again to send"
          : offline
            ? "Offline: messages wait to be sent"
            : `Message ${conv.title}`;
  },

  showTopicForm() {
    const conv = this.current;
    if (conv?.kind !== "room") return;
    $("topic-input").value = conv.topic ?? "";
    $("topic-form").hidden = false;
    $("topic-input").focus();
  },

  hideTopicForm() {
    $("topic-form").hidden = true;
  },

  setTopic(conv, topic) {
    if (conv?.kind !== "room" || !this.client) return;
    this.request(conv, () => this.client.setTopic(conv.name, topic));
  },

  renderMembers() {
    const conv = this.current;
    const list = $("member-list");
    if (!conv || conv.kind !== "room") {
      list.replaceChildren();
      $("member-count").textContent = "";
      return;
    }
    $("member-count").textContent = String(conv.members.length);
    // While not connected nobody's presence is known: say so rather than show them online.
    const stale = this.client?.state !== State.ONLINE;
    $("members-stale").hidden = !stale;
    list.classList.toggle("stale", stale);
    const order = { online: 0, busy: 1, away: 2 };
    const members = [...conv.members].sort((a, b) =>
      (order[a.status] ?? 1.5) - (order[b.status] ?? 1.5) || a.userId.localeCompare(b.userId));
    list.replaceChildren(...members.map(({ userId, status: known, text: knownText }) => {
      const isMe = userId === this.me;
      const status = stale ? "unknown" : known;
      const text = stale ? "" : knownText;
      return h("li", { dataset: { user: userId, status } },
        h("button", {
          type: "button",
          class: "member",
          disabled: isMe,
          title: isMe ? "You" : `Message ${userId}`,
          onclick: () => this.openDirect(userId),
        },
          h("span", { class: "avatar-wrap" }, avatar(userId, "avatar--small"),
            h("span", { class: "dot", dataset: { status }, "aria-hidden": "true" })),
          h("span", { class: "member-text" },
            h("span", { class: "member-name" }, userId, isMe ? h("span", { class: "you" }, "you") : null),
            h("span", { class: "member-status" }, stale ? "Not known while offline" : [statusLabel(status), text].filter(Boolean).join(" · ")))));
    }));
  },

  renderDmStatus(user) {
    const conv = this.conversation("dm", user, { create: false });
    if (!conv) return;
    conv.dot.dataset.status = this.presence.get(user)?.status ?? "unknown";
    if (this.active === conv.key) this.renderHeader();
  },

  renderTyping() {
    const conv = this.current;
    const names = conv ? [...conv.typers.keys()] : [];
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = "Several people are typing…";
    $("typing").textContent = text;
  },

  updateTitle() {
    const unread = [...this.conversations.values()].reduce((sum, conv) => sum + conv.unread, 0);
    document.title = unread ? `(${unread}) trio chat` : "trio chat";
    // On a phone the sidebar is a drawer: its menu button carries the count.
    const badge = $("menu-badge");
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.hidden = unread === 0;
    $("open-sidebar").setAttribute("aria-label", unread ? `Rooms (${unread} unread)` : "Rooms");
  },

  /** Keep the log pinned to the newest message unless the reader scrolled up. */
  withAutoScroll(conv, change) {
    const box = $("messages");
    const pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const result = change();
    if (conv.key === this.active && pinned) this.scrollToBottom();
    return result;
  },

  scrollToBottom() {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
    this.updateJump();
  },

  /** The "jump to latest" button: there while the reader is away from the newest message. */
  updateJump() {
    const box = $("messages");
    const away = box.scrollHeight - box.scrollTop - box.clientHeight > 120;
    $("jump-latest").hidden = !away || !this.current;
    if (!away) this.markSeen();
  },

  /** A message *el* arrived in *conv* that the reader has not seen yet (unless they are looking). */
  bump(conv, el, { mention = false } = {}) {
    const box = $("messages");
    const watching = conv.key === this.active && !document.hidden;
    if (!watching) {
      conv.setUnread(conv.unread + 1, conv.mentions + (mention ? 1 : 0));
      this.updateTitle();
    }
    if (!watching || box.scrollHeight - box.scrollTop - box.clientHeight > 120) conv.markNew(el);
    this.updateJump();
  },

  setSidebarOpen(open) {
    $("app").classList.toggle("sidebar-open", open);
    this.updateScrim();
  },

  setMembersOpen(open) {
    $("app").classList.toggle("members-open", open);
    $("toggle-members").setAttribute("aria-expanded", String(open));
    this.updateScrim();
  },

  updateScrim() {
    const app = $("app");
    const narrow = window.matchMedia("(max-width: 1099px)").matches;
    const membersOverlay = narrow && app.classList.contains("members-open") && app.dataset.kind === "room";
    $("scrim").hidden = !(app.classList.contains("sidebar-open") || membersOverlay);
  },

  // ----- connection state

  renderConnection(detail) {
    const { state } = detail;
    document.body.dataset.connection = state;
    const pill = $("conn-state");
    const mini = $("conn-mini"); // the same, in the header, for narrow screens
    const banner = $("banner");
    const label = (text) => {
      pill.textContent = text;
      pill.title = `Connection: ${text}`;
      mini.textContent = `${text} ·`;
    };
    pill.dataset.state = state;
    mini.dataset.state = state;
    banner.dataset.state = state;
    clearInterval(this.countdown);
    this.countdown = null;

    const show = (text, { retry = false } = {}) => {
      $("banner-text").textContent = text;
      $("banner-retry").hidden = !retry;
      $("banner-signin").hidden = true;
      banner.hidden = false;
    };

    switch (state) {
      case State.ONLINE:
        this.connectFailures = 0;
        label("connected");
        banner.hidden = true;
        break;
      case State.CONNECTING:
        label(detail.attempt > 0 ? "reconnecting…" : "connecting…");
        show(detail.attempt > 0 ? "Reconnecting…" : "Connecting…");
        break;
      case State.RECONNECTING: {
        if (detail.previous === State.CONNECTING) this.connectFailures++;
        const hint = detail.reason
          ? ` (${detail.reason})`
          : this.connectFailures >= 3 && !this.client.userId ? " The server may be down." : "";
        const tick = () => {
          const left = seconds(detail.retryAt - Date.now());
          label(`reconnecting in ${left} s`);
          const lead = this.client.userId ? "Connection lost." : "Can't connect.";
          $("banner-text").textContent = `${lead} Reconnecting in ${left} s.${hint}`;
        };
        show("", { retry: true });
        tick();
        this.countdown = setInterval(tick, 250);
        break;
      }
      case State.OFFLINE:
        if (detail.refused) {
          if (!this.client.userId) {
            // Refused at sign-in (a bad token, a name that is taken): back to the card, saying why.
            this.signOut(`The server refused to sign you in: ${detail.refused.reason}`);
            return;
          }
          label("signed out");
          $("banner-text").textContent = `Signed out: ${detail.refused.reason}.`;
          $("banner-retry").hidden = true;
          $("banner-signin").hidden = false;
          banner.dataset.state = "offline";
          banner.hidden = false;
          forget(STORAGE.session);
          break;
        }
        label("offline");
        show(detail.gaveUp ? "Offline: gave up reconnecting." : "Offline.", { retry: true });
        break;
      default:
        label(state);
    }
    this.renderMe();
    this.renderHeader();
    this.renderMembers();
  },

  /** Your own dot shows your status while connected, and nothing you could be seen as otherwise. */
  renderMe() {
    const online = this.client?.state === State.ONLINE;
    const own = this.presence.get(this.me)?.status ?? $("me-status").value;
    $("me-dot").dataset.status = online ? own : "offline";
    $("me-status").disabled = Boolean(this.client?.refused); // signed out: no status to set
  },

  // ----- client events

  handlers: {
    state(detail) {
      this.renderConnection(detail);
    },

    welcome({ userId, limits }) {
      this.me = userId;
      $("me-name").textContent = userId;
      $("me-avatar").replaceWith(Object.assign(avatar(userId), { id: "me-avatar" }));
      if (!remembered(STORAGE.name) || !userId.startsWith("guest-")) {
        remember(STORAGE.name, userId);
      }
      rememberSession(this.token ? { token: this.token } : { user: userId });
      renderBell($("notify-toggle"));
      this.refreshConversations();
    },

    joined({ room, truncated, rejoined, read = 0, unread = 0, mentions = 0, topic = null }) {
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      conv.topic = topic;
      conv.read = Math.max(conv.read, read);
      if (truncated) {
        conv.addNotice(rejoined ? "Some messages from while you were away are no longer available." : "Older messages are not shown.");
      }
      if (!rejoined && conv.announce) this.withAutoScroll(conv, () => conv.addNotice(`You joined #${room}`, { kind: "system" }));
      // The server counts what this user has not read, on any device.
      if (!rejoined && unread > 0) conv.markNewAfter(read, this.me);
      if (!this.watching(conv)) {
        conv.setUnread(unread, mentions);
        this.updateTitle();
      }
      if (this.active === conv.key) this.renderHeader();
      this.updateJump();
    },

    left({ room, removed }) {
      if (!removed) return;
      // A moderator closed the room: out of the sidebar, like a refused
      // join; the pane stays (if open) with the notice saying why.
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      conv.refused = "this room was closed by a moderator";
      conv.closed = true;
      conv.item.remove();
      this.saveRooms();
      if (this.active === conv.key) this.renderHeader();
    },

    members({ room, members }) {
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      conv.members = members;
      for (const { userId, status, text } of members) this.presence.set(userId, { status, text });
      if (this.active === conv.key) {
        this.renderMembers();
        this.renderHeader();
      }
    },

    message(message) {
      const conv = this.conversation("room", message.room, { create: false });
      if (!conv) return;
      const el = this.withAutoScroll(conv, () => {
        if (message.ref) conv.pendingFor(message.ref)?.remove();
        return conv.addMessage(message);
      });
      if (!message.own && !message.replayed) {
        this.bump(conv, el, { mention: this.mentionsMe(message) });
        if (this.mentionsMe(message)) {
          notifications.show(`${message.user_id} mentioned you in #${conv.name}`, message.content, { tag: conv.key, onclick: () => this.select(conv.key) });
        }
      }
      if (message.own && !message.replayed) conv.clearNew();
      if (message.user_id === this.me) conv.read = Math.max(conv.read, message.id); // posting moves the marker
      this.stopTyping(conv, message.user_id);
    },

    edit(payload) {
      const conv = this.convFor(payload);
      if (conv) this.withAutoScroll(conv, () => conv.applyEdit(payload));
    },

    delete(payload) {
      const conv = this.convFor(payload);
      if (!conv) return;
      this.withAutoScroll(conv, () => conv.applyDelete(payload));
      if (conv.unread && !this.watching(conv)) {
        const { unread, mentions } = conv.countAfter(conv.read, this.me);
        conv.setUnread(Math.min(conv.unread, unread), mentions);
        this.updateTitle();
      }
    },

    reaction(payload) {
      const conv = this.convFor(payload);
      if (conv) this.withAutoScroll(conv, () => conv.applyReaction(payload));
    },

    read(payload) {
      // This user read further, here or on another device.
      const conv = this.convFor(payload);
      if (!conv) return;
      conv.read = Math.max(conv.read, payload.id);
      const { unread, mentions } = payload.id >= conv.maxId ? { unread: 0, mentions: 0 } : conv.countAfter(payload.id, this.me);
      if (unread < conv.unread) {
        conv.setUnread(unread, mentions);
        this.updateTitle();
      }
    },

    topic({ room, topic }) {
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      conv.topic = topic || null;
      if (this.active === conv.key) this.renderHeader();
    },

    system({ event, room, user_id: user, text: said }) {
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      if (event === "topic") {
        const text = said ? `${user} set the topic: ${said}` : `${user} cleared the topic`;
        this.withAutoScroll(conv, () => conv.addNotice(text, { kind: "system" }));
        return;
      }
      if (event !== "join" && event !== "leave") {
        // Moderation events (kick, ban, mute, unmute) come with their own words.
        this.withAutoScroll(conv, () => conv.addNotice(said ?? `${user}: ${event}`, { kind: "system" }));
        return;
      }
      const left = conv.leftAt.get(user);
      conv.leftAt.delete(user);
      if (event === "join" && left && Date.now() - left.at < BACK_SOON_MS) {
        left.notice.remove(); // only reconnecting: as if they had never gone
        return;
      }
      const text = event === "join" ? `${user} joined #${room}` : `${user} left #${room}`;
      const notice = this.withAutoScroll(conv, () => conv.addNotice(text, { kind: "system" }));
      if (event === "leave") {
        conv.leftAt.set(user, { at: Date.now(), notice });
        this.stopTyping(conv, user);
      }
    },

    presence({ user_id: user, status, text }) {
      this.presence.set(user, { status, text });
      this.renderDmStatus(user);
      if (user === this.me) {
        const select = $("me-status");
        for (const option of [...select.options]) {
          if (option.dataset.custom && option.value !== status) option.remove();
        }
        if (![...select.options].some((option) => option.value === status)) {
          select.append(h("option", { value: status, dataset: { custom: "1" } }, statusLabel(status)));
        }
        select.value = status;
        this.renderMe();
      }
    },

    direct(message) {
      const peer = message.peer ?? (message.own ? message.to : message.from);
      const closedAt = closedConversations(this.me)[peer];
      const known = this.conversations.has(`dm:${peer}`);
      // A closed conversation stays closed for what it had, and opens again for a new message.
      if (!known && closedAt !== undefined && message.replayed && !(message.id > closedAt)) return;
      this.reopen(peer);
      const conv = this.conversation("dm", peer);
      this.renderDmStatus(peer);
      const el = this.withAutoScroll(conv, () => {
        if (message.ref) conv.pendingFor(message.ref)?.remove();
        return conv.addMessage({ ...message, user_id: message.from });
      });
      if (message.from === this.me) {
        if (typeof message.id === "number") conv.read = Math.max(conv.read, message.id);
        if (!message.replayed) conv.clearNew();
      } else if (!message.replayed) {
        this.bump(conv, el, { mention: this.mentionsMe(message) });
        this.stopTyping(conv, peer);
        notifications.show(`${peer} sent you a message`, message.content, { tag: conv.key, onclick: () => this.select(conv.key) });
      }
    },

    restart({ room }) {
      const conv = this.conversation("room", room, { create: false });
      if (!conv) return;
      conv.forgetIds();
      conv.read = 0;
      this.withAutoScroll(conv, () => conv.addNotice("The server restarted without keeping this room's history: the messages above are from before the restart."));
    },

    typing(payload) {
      const user = payload.user_id;
      const conv = this.convFor(payload);
      if (!conv || user === this.me) return;
      clearTimeout(conv.typers.get(user));
      conv.typers.set(user, setTimeout(() => this.stopTyping(conv, user), TYPING_SHOWN_MS));
      if (this.active === conv.key) this.renderTyping();
    },

    pending(detail) {
      const conv = detail.type === "chat"
        ? this.conversation("room", detail.room, { create: false })
        : this.conversation("dm", detail.to);
      if (!conv) return;
      this.withAutoScroll(conv, () => conv.addPending(detail, this.me ?? "you"));
    },

    sent({ ref }) {
      // Normally the pending bubble was replaced by the message; it is still
      // there when the message had already arrived through a room's history.
      for (const conv of this.conversations.values()) conv.pendingFor(ref)?.remove();
    },

    error(detail) {
      this.showError(detail);
    },
  },

  stopTyping(conv, user) {
    if (!conv.typers.has(user)) return;
    clearTimeout(conv.typers.get(user));
    conv.typers.delete(user);
    if (this.active === conv.key) this.renderTyping();
  },

  mentionsMe(message) {
    const mentioned = message.mentions ?? findMentions(message.content).map((found) => found.name);
    return !message.deleted && mentioned.includes(this.me);
  },

  /** Show an error where it happened: on the message it refused, or in the conversation. */
  showError({ code, message, ref, retryAfterMs, request, willRetry }) {
    if (["edit", "delete", "react"].includes(request?.type)) return; // said where it was asked (ui.request)
    const convFor = (req) => {
      if (req?.type === "chat" || req?.type === "join") return this.conversation("room", req.room, { create: false });
      if (req?.type === "direct") return this.conversation("dm", req.to, { create: false });
      return null;
    };
    const conv = convFor(request) ?? this.current;
    const pending = ref ? conv?.pendingFor(ref) : null;

    if (code === 429) {
      const until = Date.now() + (retryAfterMs ?? 1000);
      const text = () => `slow down: retry in ${seconds(until - Date.now())} s`;
      const target = pending?.querySelector(".msg-status") ?? null;
      const notice = target ? null : conv?.addNotice(text(), { kind: "error" });
      const label = target ?? notice?.querySelector(".notice-text");
      if (!label) return;
      pending?.classList.add("msg--held");
      label.textContent = text();
      const timer = setInterval(() => {
        if (Date.now() >= until || !label.isConnected) {
          clearInterval(timer);
          if (target) {
            label.textContent = "sending…";
            pending.classList.remove("msg--held");
          } else {
            notice?.remove();
          }
          return;
        }
        label.textContent = text();
      }, 250);
      return;
    }

    if (request?.type === "join" && conv) {
      conv.addNotice(`Cannot join #${request.room}: ${message}`, { kind: "error" });
      return;
    }
    if (pending && !willRetry) {
      pending.classList.add("msg--failed");
      pending.querySelector(".msg-status").textContent = `not sent: ${message}`;
      pending.querySelector(".msg-meta").append(
        h("button", { type: "button", class: "link-btn", onclick: () => pending.remove() }, "dismiss"));
      return;
    }
    if (conv) {
      this.withAutoScroll(conv, () => conv.addNotice(code ? `${message} (${code})` : message, { kind: "error" }));
    }
  },

  // ----- sending

  submitComposer() {
    const input = $("composer-input");
    const text = input.value.trim();
    const conv = this.current;
    if (!text || !conv || !this.client) return;
    const limit = this.client.limits?.max_content_chars ?? 4000;
    if (codePoints(text) > limit && !text.startsWith("/help")) {
      this.checkLength(); // the notice under the composer says why nothing was sent
      return;
    }
    const command = text.match(/^\/(join|leave|dm|status|help|rooms|topic|edit)\b\s*(.*)$/s);
    if (command && this.runCommand(command[1], command[2].trim())) {
      input.value = "";
      this.resizeComposer();
      return;
    }
    const sending = conv.kind === "room" ? this.client.send(conv.name, text) : this.client.direct(conv.name, text);
    sending.catch(() => {}); // shown through the error event
    input.value = "";
    this.checkLength();
    this.resizeComposer();
    this.scrollToBottom();
  },

  /** Slash commands, as in the terminal client. True when handled. */
  runCommand(name, args) {
    const conv = this.current;
    switch (name) {
      case "join":
        if (!ROOM_NAME.test(args)) return this.commandError(conv, "usage: /join ROOM");
        this.joinRoom(args);
        return true;
      case "leave": {
        const room = args || (conv?.kind === "room" ? conv.name : "");
        if (!room) return this.commandError(conv, "usage: /leave ROOM");
        this.leaveRoom(room);
        return true;
      }
      case "dm": {
        const [, to, content] = args.match(/^(\S+)\s+(.+)$/s) ?? [];
        if (!to || !USER_ID.test(to)) return this.commandError(conv, "usage: /dm USER TEXT");
        this.openDirect(to);
        this.client.direct(to, content).catch(() => {});
        return true;
      }
      case "rooms":
        this.browser.open(args);
        return true;
      case "topic":
        if (conv?.kind !== "room") return this.commandError(conv, "/topic is for rooms: open one first");
        if (!args) {
          conv.addNotice(conv.topic ? `The topic of #${conv.name}: ${conv.topic}` : `#${conv.name} has no topic: /topic TEXT sets one`);
          return true;
        }
        if (codePoints(args) > 256) return this.commandError(conv, "a topic is at most 256 characters");
        this.setTopic(conv, args);
        return true;
      case "edit": {
        const id = conv?.lastOwnId();
        if (id === null || id === undefined) return this.commandError(conv, "nothing of yours to edit here");
        if (args) this.actions.edit(conv, id, args);
        else conv.startEdit(id);
        return true;
      }
      case "status":
        if (!args || args.length > 32) return this.commandError(conv, "usage: /status away (at most 32 characters)");
        this.client.setPresence(args);
        return true;
      case "help":
        this.withAutoScroll(conv, () => {
          const notice = conv.addNotice("Commands:");
          notice.classList.add("notice--help");
          notice.querySelector(".notice-text").append(h("dl", { class: "help" },
            COMMANDS.flatMap(([usage, what]) => [h("dt", {}, usage), h("dd", {}, what)])));
        });
        return true;
      default:
        return false;
    }
  },

  commandError(conv, text) {
    conv?.addNotice(text, { kind: "error" });
    return true;
  },

  /** Say so when the text is over the server's limit (nothing is cut). */
  checkLength() {
    const input = $("composer-input");
    const limit = this.client?.limits?.max_content_chars ?? 4000;
    const length = codePoints(input.value);
    const over = length > limit;
    const notice = $("composer-limit");
    notice.hidden = !over;
    notice.textContent = over
      ? `Too long to send: ${length.toLocaleString("en")} characters, the limit is ${limit.toLocaleString("en")}. Shorten it or send it in parts.`
      : "";
    $("composer").classList.toggle("over-limit", over);
    input.setAttribute("aria-invalid", String(over));
    return over;
  },

  onComposerInput() {
    this.checkLength();
    this.resizeComposer();
    const conv = this.current;
    const now = Date.now();
    if (conv && !conv.refused && $("composer-input").value && !$("composer-input").value.startsWith("/") && now - this.lastTypingSent > TYPING_SENT_EVERY_MS) {
      this.lastTypingSent = now;
      if (conv.kind === "room") this.client.typing(conv.name);
      else this.client.typingTo(conv.name);
    }
  },

  resizeComposer() {
    const input = $("composer-input");
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  },
};

// ------------------------------------------------------------------ wiring

function setupLogin() {
  const name = $("login-name");
  name.value = remembered(STORAGE.name)?.replace(/^guest-.*/, "") ?? "";
  $("storage-notice").hidden = storage !== null;
  const rooms = loadRooms();
  if (rooms.length) $("login-room").value = rooms[0];
  const session = rememberedSession();
  if (session) {
    // Signed in before this reload: carry on (sign-out forgets it).
    ui.start({ ...session, room: rooms[0] ?? "lobby", resumed: true });
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = name.value.trim();
    const token = $("login-token").value.trim();
    const room = $("login-room").value.trim() || "lobby";
    const error = $("login-error");
    if (!token && user && !USER_ID.test(user)) {
      error.textContent = "Names start with a letter or digit and use only letters, digits and _ . @ - (at most 64).";
      name.focus();
      return;
    }
    if (!ROOM_NAME.test(room)) {
      error.textContent = "Room names start with a letter or digit and use only letters, digits and _ . : - (at most 64).";
      $("login-room").focus();
      return;
    }
    error.textContent = "";
    if (user && !token) remember(STORAGE.name, user);
    ui.start({ user: token ? "" : user, token, room });
  });
  if (!session) name.focus();
}

function setupChat() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    ui.submitComposer();
  });
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.submitComposer();
    } else if (event.key === "ArrowUp" && !event.target.value) {
      // Up in an empty composer edits your last message, as in most chats.
      const id = ui.current?.lastOwnId();
      if (id !== null && id !== undefined) {
        event.preventDefault();
        ui.current.startEdit(id);
      }
    }
  });
  $("composer-input").addEventListener("input", () => ui.onComposerInput());

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("join-room");
    const room = input.value.trim().replace(/^#/, "");
    if (!ROOM_NAME.test(room)) {
      input.setCustomValidity("Letters, digits and _ . : - only (at most 64)");
      input.reportValidity();
      return;
    }
    input.value = "";
    ui.joinRoom(room);
  });
  $("join-room").addEventListener("input", (event) => event.target.setCustomValidity(""));

  $("leave-room").addEventListener("click", () => {
    const conv = ui.current;
    if (conv?.kind === "room") ui.leaveRoom(conv.name);
    else if (conv?.kind === "dm") ui.dropConversation(conv.key); // a new message opens it again
  });
  $("messages").addEventListener("scroll", () => ui.updateJump(), { passive: true });
  $("jump-latest").addEventListener("click", () => {
    ui.scrollToBottom();
    $("composer-input").focus();
  });
  $("me-status").addEventListener("change", (event) => ui.client?.setPresence(event.target.value));
  $("sign-out").addEventListener("click", () => ui.signOut());
  $("banner-signin").addEventListener("click", () => {
    const reason = ui.client?.refused?.reason;
    ui.signOut(reason ? `Signed out: ${reason}` : "");
  });
  $("banner-retry").addEventListener("click", () => {
    if (ui.client?.state === State.OFFLINE) ui.client.connect();
    else ui.client?.retryNow();
  });
  $("open-sidebar").addEventListener("click", () => ui.setSidebarOpen(true));
  $("toggle-members").addEventListener("click", () => ui.setMembersOpen(!$("app").classList.contains("members-open")));
  $("close-members").addEventListener("click", () => ui.setMembersOpen(false));
  $("scrim").addEventListener("click", () => {
    ui.setSidebarOpen(false);
    if (window.matchMedia("(max-width: 1099px)").matches) ui.setMembersOpen(false);
  });
  window.matchMedia("(max-width: 1099px)").addEventListener("change", () => ui.updateScrim());
  // A reload or a closed tab: the read markers waiting for their second go now.
  window.addEventListener("pagehide", () => ui.client?.flushReads());
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    ui.current?.setUnread(0);
    ui.updateTitle();
    ui.markSeen();
  });

  // Notifications, room discovery, the topic.
  const bell = $("notify-toggle");
  renderBell(bell);
  bell.addEventListener("click", async () => {
    await notifications.toggle();
    renderBell(bell);
  });
  ui.browser = new RoomBrowser({
    client: () => ui.client,
    joined: (room) => Boolean(ui.conversation("room", room, { create: false })) && !ui.conversation("room", room, { create: false }).refused,
    join: (room) => ui.joinRoom(room),
  });
  $("browse-rooms").addEventListener("click", () => ui.browser.open());
  $("edit-topic").addEventListener("click", () => ui.showTopicForm());
  $("topic-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ui.setTopic(ui.current, $("topic-input").value.trim());
    ui.hideTopicForm();
  });
  $("topic-cancel").addEventListener("click", () => ui.hideTopicForm());
  $("topic-input").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      ui.hideTopicForm();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      ui.setSidebarOpen(false);
      if (window.matchMedia("(max-width: 1099px)").matches) ui.setMembersOpen(false);
    }
  });
}

setupChat();
setupLogin();