// The room discovery dialog: the rooms there are (the server's `rooms`
// answer), searchable by name or topic, each with a button to join it.

import { $, h } from "/static/dom.js";

const SEARCH_DELAY_MS = 300; // a `rooms` request counts against the rate limit as a chat does

export class RoomBrowser {
  /**
   * @param {{client: () => object | null, joined: (room: string) => boolean, join: (room: string) => void}} page
   */
  constructor(page) {
    this.page = page;
    this.dialog = $("rooms-dialog");
    this.search = $("rooms-search");
    this.list = $("rooms-found");
    this.status = $("rooms-status");
    this.timer = null;
    this.asked = 0; // answers to older questions are dropped
    this.search.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refresh(), SEARCH_DELAY_MS);
    });
    this.dialog.addEventListener("close", () => clearTimeout(this.timer));
    $("rooms-close").addEventListener("click", () => this.dialog.close());
  }

  open(query = "") {
    this.search.value = query;
    if (!this.dialog.open) this.dialog.showModal();
    this.search.focus();
    this.refresh();
  }

  async refresh() {
    const client = this.page.client();
    const asked = ++this.asked;
    if (!client) return;
    this.status.textContent = "Looking…";
    let answer;
    try {
      answer = await client.findRooms(this.search.value.trim().slice(0, 64));
    } catch (error) {
      if (asked === this.asked) this.status.textContent = `Cannot list the rooms: ${error.message}`;
      return;
    }
    if (asked !== this.asked) return;
    const rooms = answer.rooms ?? [];
    const query = this.search.value.trim();
    this.status.textContent = rooms.length === 0
      ? (query ? `No room matches “${query}”.` : "No rooms yet: join one by its name to create it.")
      : answer.truncated ? `The first ${rooms.length} rooms:` : "";
    this.list.replaceChildren(...rooms.map(({ room, members, topic }) => {
      const joined = this.page.joined(room);
      return h("li", { dataset: { room } },
        h("div", { class: "found-text" },
          h("span", { class: "found-name" }, `#${room}`),
          h("span", { class: "found-meta" }, `${members} ${members === 1 ? "member" : "members"}`),
          topic ? h("span", { class: "found-topic" }, topic) : null),
        h("button", {
          type: "button",
          class: `btn btn-small${joined ? " btn-ghost" : " btn-primary"}`,
          onclick: () => {
            this.dialog.close();
            this.page.join(room);
          },
        }, joined ? "Open" : "Join"));
    }));
  }
}
