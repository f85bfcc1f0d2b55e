// What the chat page remembers in the browser: the session, the rooms, the
// browser's key, and the direct conversations closed in the sidebar.
//
// localStorage can be missing or throw (storage blocked, some private
// modes, sandboxed frames): the page then works without remembering
// anything, and says so on the sign-in card.

export const USER_ID = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;
export const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
export const STORAGE = {
  name: "trio-chat.name",
  rooms: "trio-chat.rooms",
  session: "trio-chat.session",
  key: "trio-chat.key",
  closed: "trio-chat.closed", // + "." + user id: {peer: newest id when closed}
  notify: "trio-chat.notify",
};

function openStore(name) {
  try {
    const store = window[name];
    store.setItem("trio-chat.probe", "1");
    store.removeItem("trio-chat.probe");
    return store;
  } catch {
    return null;
  }
}


export const storage = openStore("localStorage");
// A token is kept for this tab only (it survives a reload, not the tab).
export const tabStorage = openStore("sessionStorage");

export function remembered(key, store = storage) {
  try {
    return store?.getItem(key) ?? null;
  } catch {
    return null;
  }
}

export function remember(key, value, store = storage) {
  try {
    store?.setItem(key, value);
  } catch {
    // full or blocked: nothing is remembered
  }
}

export function forget(key) {
  for (const store of [storage, tabStorage]) {
    try {
      store?.removeItem(key);
    } catch {
      // blocked: nothing was remembered
    }
  }
}

/** Keep the session for the next reload: a name for good, a token for this tab only. */
export function rememberSession(session) {
  forget(STORAGE.session);
  if (session.token) remember(STORAGE.session, JSON.stringify(session), tabStorage);
  else remember(STORAGE.session, JSON.stringify(session));
}

/** The session to resume after a reload: {user} or {token}, or null. */
export function rememberedSession() {
  for (const store of [tabStorage, storage]) {
    try {
      const session = JSON.parse(remembered(STORAGE.session, store) ?? "null");
      if (typeof session?.token === "string" && session.token) return { token: session.token };
      if (typeof session?.user === "string" && USER_ID.test(session.user)) return { user: session.user };
    } catch {
      // unreadable: start afresh
    }
  }
  return null;
}

/**
 * This browser's key, sent with an anonymous name so that the server keeps
 * the name for this browser only. Made once and kept; without storage there
 * is none (the page could not send the same one after a reload).
 */
export function browserKey() {
  if (!storage) return undefined;
  let key = remembered(STORAGE.key);
  if (!key || !/^[A-Za-z0-9_-]{8,64}$/.test(key)) {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    key = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    remember(STORAGE.key, key);
    if (remembered(STORAGE.key) !== key) return undefined;
  }
  return key;
}

// Bidi controls (embeddings, overrides, isolates, marks) can make a link
// read as something else ("…/\u202egnp.exe" shows as "…/exe.png"): in a

export function loadRooms() {
  try {
    const rooms = JSON.parse(remembered(STORAGE.rooms) ?? "[]");
    return Array.isArray(rooms) ? rooms.filter((room) => typeof room === "string" && ROOM_NAME.test(room)) : [];
  } catch {
    return [];
  }
}

/** The direct conversations this user closed in the sidebar: {peer: the newest id then}. */
export function closedConversations(me) {
  try {
    const closed = JSON.parse(remembered(`${STORAGE.closed}.${me}`) ?? "{}");
    return closed && typeof closed === "object" && !Array.isArray(closed) ? closed : {};
  } catch {
    return {};
  }
}

export function rememberClosed(me, closed) {
  remember(`${STORAGE.closed}.${me}`, JSON.stringify(closed));
}
