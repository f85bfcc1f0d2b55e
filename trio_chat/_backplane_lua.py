"""The Lua scripts of the Redis backplane (see :mod:`trio_chat._backplane`).

Each script is one atomic step in Redis.  Room and user names cannot hold
spaces or quotes (the protocol's patterns), so they are joined into fields,
channel messages and frames as they are.  Channel messages are
``KIND NUMBER ORIGIN SUBJECT FRAME``: ``m`` a logged message (NUMBER its id),
``j``/``l`` a cluster-wide join/leave (NUMBER the room's membership
version; no FRAME: each process makes the ``system`` event), ``t`` typing,
``p`` presence; except on ``ch:m``, where one message carries every chat
message of a script call, one a line (frames are JSON: never a raw
newline), each ``ROOM ID ORIGIN FRAME``.
"""

from __future__ import annotations

import attrs

__all__ = ["DEREGISTER", "SCRIPTS", "Retention", "render_scripts"]


@attrs.frozen
class Retention:
    """What Redis keeps of room history (the ``history_*`` settings).

    * a room's log holds at most ``per_room`` bytes of frames (and the
      message count the backplane retains), the oldest trimmed first, and
      no message older than ``max_age`` seconds (0: no age limit);
    * so does each user's inbox of direct messages (the log ``@user``; it
      also expires a day after its last message);
    * all logs together hold at most ``total`` bytes: past it the least
      recently written log loses its oldest messages first;
    * at most ``rooms`` logs (rooms and inboxes) are kept: past it the
      least recently written one goes;
    * a room's keys expire ``max_age`` after its last member left or its
      last message arrived with nobody in it (0: a week).

    Bytes are those of the frames; Redis's own overhead per stream entry
    comes on top.  Ids continue across trims (the ``seq`` key stays).
    """

    per_room: int = 1 << 20
    total: int = 128 << 20
    rooms: int = 10_000
    max_age: float = 604800.0

    @property
    def ttl(self) -> int:
        return int(self.max_age) if self.max_age >= 1 else 604800


_COMMON = r"""
local P = ARGV[1]
local ROOM_TTL = @TTL@
-- A room's data lives while it has members anywhere, and ROOM_TTL after.
local function room_expiry(room)
  local keys = {P .. 'seq:' .. room, P .. 'log:' .. room, P .. 'mver:' .. room,
    P .. 'repoch:' .. room}
  for _, key in ipairs(keys) do
    if redis.call('EXISTS', P .. 'members:' .. room) == 1 then
      redis.call('PERSIST', key)
    else
      redis.call('EXPIRE', key, ROOM_TTL)
    end
  end
end
local function member_count(room, user, delta)
  local key = P .. 'members:' .. room
  local n = redis.call('HINCRBY', key, user, delta)
  if n <= 0 then redis.call('HDEL', key, user) end
  if (delta > 0 and n == 1) or (delta < 0 and n <= 0) then
    local v = redis.call('INCR', P .. 'mver:' .. room)
    local kind = 'l'
    if delta > 0 then kind = 'j' end
    redis.call('PUBLISH', P .. 'ch:r:' .. room, kind .. ' ' .. v .. ' - ' .. user .. ' -')
    room_expiry(room)
  end
end
local function member_add(node, room, user)
  if redis.call('HSETNX', P .. 'proc:' .. node, 'm ' .. room .. ' ' .. user, '1') == 1 then
    redis.call('SET', P .. 'seq:' .. room, '0', 'NX')
    member_count(room, user, 1)
  end
end
local function member_del(node, room, user)
  if redis.call('HDEL', P .. 'proc:' .. node, 'm ' .. room .. ' ' .. user) == 1 then
    member_count(room, user, -1)
  end
end
local function online_count(user, delta)
  local n = redis.call('HINCRBY', P .. 'online', user, delta)
  if n <= 0 then
    redis.call('HDEL', P .. 'online', user)
    redis.call('HDEL', P .. 'presence', user)
    redis.call('EXPIRE', P .. 'dmseq:' .. user, 604800)
  elseif n == 1 and delta > 0 then
    redis.call('PERSIST', P .. 'dmseq:' .. user)
  end
end
local function online_add(node, user)
  if redis.call('HSETNX', P .. 'proc:' .. node, 'u ' .. user, '1') == 1 then
    online_count(user, 1)
  end
  return tonumber(redis.call('GET', P .. 'dmseq:' .. user) or '0')
end
local function online_del(node, user)
  if redis.call('HDEL', P .. 'proc:' .. node, 'u ' .. user) == 1 then
    online_count(user, -1)
  end
end
local function unregister(node, field)
  local kind, a, b = string.match(field, '^(%a) (%S+) ?(%S*)$')
  if kind == 'm' then member_del(node, a, b) elseif kind == 'u' then online_del(node, a) end
end
local function drop_node(node)
  for _, field in ipairs(redis.call('HKEYS', P .. 'proc:' .. node)) do
    unregister(node, field)
  end
  redis.call('DEL', P .. 'proc:' .. node)
  redis.call('ZREM', P .. 'procs', node)
end
-- The name of a room's numbering (``joined.epoch``): made with the room's
-- first load (or kept from *candidate*), it goes with the room's other keys.
local function room_epoch(room, candidate)
  local key = P .. 'repoch:' .. room
  local epoch = redis.call('GET', key)
  if not epoch and candidate ~= '' then
    epoch = candidate
    redis.call('SET', key, epoch, 'EX', ROOM_TTL)
  end
  return epoch
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_REMEMBER = r"""
local function remember(refs, queue, ref, memo, limit)
  redis.call('HSET', refs, ref, memo)
  redis.call('RPUSH', queue, ref)
  if redis.call('LLEN', queue) > tonumber(limit) then
    redis.call('HDEL', refs, redis.call('LPOP', queue))
  end
  redis.call('EXPIRE', refs, 86400)
  redis.call('EXPIRE', queue, 86400)
end
"""

#: Retention of room logs (see :class:`Retention`): ``hsizes`` holds each
#: logged room's bytes, ``hbytes`` their sum, ``hrooms`` the rooms by last
#: write.  A log that expired is found there and forgotten when its turn
#: comes (it holds nothing any more).
_RETAIN = r"""
local PER_ROOM, TOTAL, MAX_ROOMS, MAX_AGE_MS = @PER_ROOM@, @TOTAL@, @ROOMS@, @MAX_AGE_MS@
local ROOM_TTL = @TTL@
-- A log's stream: a room's, or (``@user``) a user's direct-message inbox.
local function log_key(name)
  if string.sub(name, 1, 1) == '@' then return P .. 'dm:' .. string.sub(name, 2) end
  return P .. 'log:' .. name
end
local function forget_log(room)
  local size = tonumber(redis.call('HGET', P .. 'hsizes', room) or '0')
  redis.call('DEL', log_key(room))
  redis.call('HDEL', P .. 'hsizes', room)
  redis.call('ZREM', P .. 'hrooms', room)
  redis.call('DECRBY', P .. 'hbytes', size)
end
-- Remove the oldest entry of a room's log; false if it has none.
local function trim_oldest(room)
  local log = log_key(room)
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #oldest == 0 then
    forget_log(room)
    return false
  end
  local id, fields, size = oldest[1][1], oldest[1][2], 0
  for i = 1, #fields, 2 do
    if fields[i] == 'f' then size = #fields[i + 1] end
  end
  redis.call('XDEL', log, id)
  redis.call('HINCRBY', P .. 'hsizes', room, -size)
  redis.call('DECRBY', P .. 'hbytes', size)
  return true
end
local function oldest_time(room)
  local oldest = redis.call('XRANGE', log_key(room), '-', '+', 'COUNT', 1)
  if #oldest == 0 then return nil end
  local fields = oldest[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then return tonumber(fields[i + 1]) end
  end
  return 0
end
local function retain_log(room, now, retain)
  local log = log_key(room)
  while redis.call('XLEN', log) > retain
    or tonumber(redis.call('HGET', P .. 'hsizes', room) or '0') > PER_ROOM do
    if not trim_oldest(room) then break end
  end
  if MAX_AGE_MS > 0 then
    local t = oldest_time(room)
    while t ~= nil and t < now - MAX_AGE_MS do
      trim_oldest(room)
      t = oldest_time(room)
    end
  end
  while tonumber(redis.call('GET', P .. 'hbytes') or '0') > TOTAL do
    local victim = redis.call('ZRANGE', P .. 'hrooms', 0, 0)[1]
    if victim == nil then break end
    trim_oldest(victim)
  end
  while redis.call('ZCARD', P .. 'hrooms') > MAX_ROOMS do
    forget_log(redis.call('ZRANGE', P .. 'hrooms', 0, 0)[1])
  end
end
local function logged(room, size, now, retain)
  redis.call('HINCRBY', P .. 'hsizes', room, size)
  redis.call('INCRBY', P .. 'hbytes', size)
  redis.call('ZADD', P .. 'hrooms', redis.call('INCR', P .. 'hclock'), room)
  retain_log(room, now, retain)
end
"""

#: Several chat messages, each as atomic as one script: for each, check the
#: sender's ref, take the room's next id, append the frame to the room's
#: stream (within :class:`Retention`), publish it, remember the ref.  ARGV:
#: prefix, epoch, ref memory, retain, the chat and ack frames' text before
#: their id, then 7 per message: room, user, ref, create ('1'/'0'), the
#: frame's and the ack's text after the id, origin.  The ack is what the
#: ref remembers.  Answers one result per message.
_CHATS = (
    _REMEMBER
    + r"""
local P, epoch, limit, retain = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local CHAT, ACK = ARGV[5], ARGV[6]
"""
    + _RETAIN
    + r"""
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local same_epoch = redis.call('GET', P .. 'epoch') == epoch
local out, published = {}, {}
for i = 7, #ARGV, 7 do
  local room, user, ref = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local refs, queue = P .. 'refs:' .. user, P .. 'refq:' .. user
  local seq = P .. 'seq:' .. room
  local seen = false
  if same_epoch and ref ~= '' then seen = redis.call('HGET', refs, ref) end
  if not same_epoch then
    out[#out + 1] = {'epoch'}
  elseif seen then
    out[#out + 1] = {'dup', seen}
  elseif ARGV[i + 3] == '0' and redis.call('EXISTS', seq) == 0 then
    out[#out + 1] = {'noroom'}
  else
    local id = redis.call('INCR', seq)
    local frame = CHAT .. id .. ARGV[i + 4]
    local log = P .. 'log:' .. room
    redis.call('XADD', log, id .. '-0', 'o', ARGV[i + 6], 'f', frame, 't', now)
    logged(room, #frame, now, retain)
    published[#published + 1] = room .. ' ' .. id .. ' ' .. ARGV[i + 6] .. ' ' .. frame
    if ref ~= '' then remember(refs, queue, ref, ACK .. id .. ARGV[i + 5], limit) end
    if redis.call('EXISTS', P .. 'members:' .. room) == 0 then
      -- Nobody in the room (a publish through the API): ROOM_TTL to live.
      redis.call('EXPIRE', seq, ROOM_TTL)
      redis.call('EXPIRE', log, ROOM_TTL)
      redis.call('EXPIRE', P .. 'mver:' .. room, ROOM_TTL)
      redis.call('EXPIRE', P .. 'repoch:' .. room, ROOM_TTL)
    end
    out[#out + 1] = {'ok', id}
  end
end
-- One pub/sub message for the whole batch: a subscriber's cost is mostly
-- per pub/sub message, whatever it holds.
if #published > 0 then
  redis.call('PUBLISH', P .. 'ch:m', table.concat(published, '\n'))
end
return out
"""
)

#: KEYS: epoch, refs, refq, online, dmseq, dm.  ARGV: epoch, ref, ref memory,
#: to, frame, origin, retain, channel, the ack (what the ref remembers),
#: prefix.  The inbox is a log of :class:`Retention` named ``@`` and the
#: user (no room name starts with ``@``): bounded in bytes like a room's.
_DIRECT = (
    _REMEMBER
    + r"""
local P = ARGV[10]
"""
    + _RETAIN
    + r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch'} end
local ref = ARGV[2]
if ref ~= '' then
  local seen = redis.call('HGET', KEYS[2], ref)
  if seen then return {'dup', seen} end
end
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 0 then return {'absent'} end
local id = redis.call('INCR', KEYS[5])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[6], id .. '-0', 'o', ARGV[6], 'f', ARGV[5], 't', now)
redis.call('EXPIRE', KEYS[6], 86400)
logged('@' .. ARGV[4], #ARGV[5], now, tonumber(ARGV[7]))
redis.call('PUBLISH', ARGV[8], 'm ' .. id .. ' ' .. ARGV[6] .. ' - ' .. ARGV[5])
if ref ~= '' then remember(KEYS[2], KEYS[3], ref, ARGV[9], ARGV[3]) end
return {'ok', id}
"""
)

#: ARGV: prefix, node, room, user, '1' (join) or '0' (leave).
_MEMBER = (
    _COMMON
    + r"""
if ARGV[5] == '1' then member_add(ARGV[2], ARGV[3], ARGV[4])
else member_del(ARGV[2], ARGV[3], ARGV[4]) end
return 1
"""
)

#: ARGV: prefix, node, user, '1' (online: answers the inbox id) or '0'.
_ONLINE = (
    _COMMON
    + r"""
if ARGV[4] == '1' then return online_add(ARGV[2], ARGV[3]) end
online_del(ARGV[2], ARGV[3])
return 0
"""
)

#: ARGV: prefix, room, history count, history bytes, candidate epoch.  The
#: history is the newest entries whose frames add up to that many bytes at
#: most.
_LOAD = (
    _COMMON
    + r"""
local room = ARGV[2]
local epoch = room_epoch(room, ARGV[5])
local last = tonumber(redis.call('GET', P .. 'seq:' .. room) or '0')
local entries = {}
if tonumber(ARGV[3]) > 0 then
  local budget = tonumber(ARGV[4])
  local newest = redis.call('XREVRANGE', P .. 'log:' .. room, '+', '-', 'COUNT', ARGV[3])
  for _, entry in ipairs(newest) do
    local fields, size = entry[2], 0
    for i = 1, #fields, 2 do
      if fields[i] == 'f' then size = #fields[i + 1] end
    end
    budget = budget - size
    if budget < 0 then break end
    entries[#entries + 1] = entry
  end
end
local members = redis.call('HKEYS', P .. 'members:' .. room)
local version = tonumber(redis.call('GET', P .. 'mver:' .. room) or '0')
local presence = {}
for _, user in ipairs(members) do
  local frame = redis.call('HGET', P .. 'presence', user)
  if frame then
    presence[#presence + 1] = user
    presence[#presence + 1] = frame
  end
end
return {last, entries, members, version, presence, epoch}
"""
)

#: ARGV: prefix, room.
_MEMBERS = (
    _COMMON
    + r"""
local version = tonumber(redis.call('GET', P .. 'mver:' .. ARGV[2]) or '0')
return {version, redis.call('HKEYS', P .. 'members:' .. ARGV[2])}
"""
)

#: ARGV: prefix, node, user, frame.
_PRESENCE = (
    _COMMON
    + r"""
if redis.call('HEXISTS', P .. 'online', ARGV[3]) == 1 then
  redis.call('HSET', P .. 'presence', ARGV[3], ARGV[4])
end
redis.call('PUBLISH', P .. 'ch:p', 'p 0 ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return 1
"""
)

#: ARGV: prefix, room, floor, the room's epoch.
_FLOOR = (
    _COMMON
    + r"""
local key = P .. 'seq:' .. ARGV[2]
if tonumber(redis.call('GET', key) or '0') < tonumber(ARGV[3]) then
  redis.call('SET', key, ARGV[3])
end
room_epoch(ARGV[2], ARGV[4])
return 1
"""
)

#: ARGV: prefix, node, ttl ms, candidate epoch, n, n entries, inbox users...
_SYNC = (
    _COMMON
    + r"""
local node = ARGV[2]
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', P .. 'epoch', epoch)
end
redis.call('ZADD', P .. 'procs', now_ms() + tonumber(ARGV[3]), node)
local n = tonumber(ARGV[5])
local want = {}
for i = 6, 5 + n do want[ARGV[i]] = true end
for _, field in ipairs(redis.call('HKEYS', P .. 'proc:' .. node)) do
  if not want[field] then unregister(node, field) end
end
for i = 6, 5 + n do
  local kind, a, b = string.match(ARGV[i], '^(%a) (%S+) ?(%S*)$')
  if kind == 'm' then member_add(node, a, b) elseif kind == 'u' then online_add(node, a) end
end
local ids = {}
for i = 6 + n, #ARGV do
  ids[#ids + 1] = ARGV[i]
  ids[#ids + 1] = tonumber(redis.call('GET', P .. 'dmseq:' .. ARGV[i]) or '0')
end
return {epoch, ids}
"""
)

#: ARGV: prefix, node, ttl ms, epoch.  Also removes processes that expired.
_HEARTBEAT = (
    _COMMON
    + r"""
local node = ARGV[2]
local now = now_ms()
for _, other in ipairs(redis.call('ZRANGEBYSCORE', P .. 'procs', '-inf', now)) do
  if other ~= node then drop_node(other) end
end
if redis.call('GET', P .. 'epoch') ~= ARGV[4] or not redis.call('ZSCORE', P .. 'procs', node) then
  return 'lost'
end
redis.call('ZADD', P .. 'procs', now + tonumber(ARGV[3]), node)
return 'ok'
"""
)

#: ARGV: prefix, node.
_DEREGISTER = (
    _COMMON
    + r"""
drop_node(ARGV[2])
return 1
"""
)

_TEMPLATES = {
    "deregister": _DEREGISTER,
    "chats": _CHATS,
    "direct": _DIRECT,
    "member": _MEMBER,
    "online": _ONLINE,
    "load": _LOAD,
    "members": _MEMBERS,
    "presence": _PRESENCE,
    "floor": _FLOOR,
    "sync": _SYNC,
    "heartbeat": _HEARTBEAT,
}


def render_scripts(retention: Retention | None = None) -> dict[str, str]:
    """Every script, with *retention*'s bounds written in."""
    retention = retention or Retention()
    values = {
        "@TTL@": str(retention.ttl),
        "@PER_ROOM@": str(retention.per_room),
        "@TOTAL@": str(retention.total),
        "@ROOMS@": str(retention.rooms),
        "@MAX_AGE_MS@": str(int(retention.max_age * 1000)),
    }
    scripts = {}
    for name, template in _TEMPLATES.items():
        text = template
        for key, value in values.items():
            text = text.replace(key, value)
        scripts[name] = text
    return scripts


#: The scripts at the default retention.
SCRIPTS = render_scripts()
DEREGISTER = SCRIPTS.pop("deregister")
