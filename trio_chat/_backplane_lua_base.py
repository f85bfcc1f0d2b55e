"""The Lua functions the Redis backplane's scripts share
(:mod:`trio_chat._backplane_lua` renders the scripts).

Every script starts with ``local P = ARGV[1]`` (the key prefix) or defines
``P`` before these: memberships and a room's expiry (:data:`COMMON`),
remembered refs (:data:`REMEMBER`), reading a log (:data:`READ`) and
keeping it within the retention bounds (:data:`RETAIN`, whose ``@...@``
placeholders :func:`~trio_chat._backplane_lua.render_scripts` fills in).
"""

from __future__ import annotations

__all__ = ["COMMON", "CONVERSATIONS", "READ", "REMEMBER", "RETAIN"]

COMMON = r"""
local P = ARGV[1]
local ROOM_TTL = @TTL@
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A room's data lives while it has members anywhere, and ROOM_TTL after;
-- the directory has it by its member users (``dir``, scored minus their
-- number: most first, then by name) and, while it has none, by when its
-- keys expire (``dirx``).
local function room_expiry(room)
  local members = redis.call('HLEN', P .. 'members:' .. room)
  local keys = {P .. 'seq:' .. room, P .. 'log:' .. room, P .. 'mver:' .. room,
    P .. 'repoch:' .. room, P .. 'rev:' .. room, P .. 'rver:' .. room, P .. 'topic:' .. room}
  for _, key in ipairs(keys) do
    if members > 0 then
      redis.call('PERSIST', key)
    else
      redis.call('EXPIRE', key, ROOM_TTL)
    end
  end
  redis.call('ZADD', P .. 'dir', -members, room)
  if members > 0 then
    redis.call('ZREM', P .. 'dirx', room)
  else
    redis.call('ZADD', P .. 'dirx', now_ms() + ROOM_TTL * 1000, room)
  end
end
-- Forget at most *limit* rooms of the directory whose keys expired.
local function dir_expired(limit)
  local gone = redis.call('ZRANGEBYSCORE', P .. 'dirx', '-inf', now_ms(), 'LIMIT', 0, limit)
  for _, room in ipairs(gone) do
    if redis.call('EXISTS', P .. 'seq:' .. room) == 0 then
      redis.call('ZREM', P .. 'dir', room)
      redis.call('ZREM', P .. 'dirx', room)
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
"""

REMEMBER = r"""
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

#: How a log is read.  A room's messages are its stream ``log:<room>``
#: (each entry as appended: ``o`` origin, ``f`` frame, ``t`` time in ms) and
#: ``rev:<room>``, a sorted set scored by id of the messages revised since
#: (edited, deleted, reacted to), each ``TIME ORIGIN FRAME``: a revised
#: message leaves the stream, so that each message is in one place and a
#: deleted one's text is gone.  An entry read is ``{id, origin, frame}``.
READ = r"""
-- A log's stream and revisions: a room's, or (``@user``) a user's inbox.
local function log_key(name)
  if string.sub(name, 1, 1) == '@' then return P .. 'dm:' .. string.sub(name, 2) end
  return P .. 'log:' .. name
end
local function rev_key(name)
  return P .. 'rev:' .. name
end
local function stream_entries(raw)
  local out = {}
  for _, e in ipairs(raw) do
    local fields, origin, frame = e[2], '-', ''
    for i = 1, #fields, 2 do
      if fields[i] == 'o' then origin = fields[i + 1] end
      if fields[i] == 'f' then frame = fields[i + 1] end
    end
    out[#out + 1] = {tonumber(string.match(e[1], '^%d+')), origin, frame}
  end
  return out
end
local function rev_entries(raw)
  local out = {}
  for i = 1, #raw, 2 do
    local origin, frame = string.match(raw[i], '^%d+ (%S+) (.*)$')
    out[#out + 1] = {tonumber(raw[i + 1]), origin, frame}
  end
  return out
end
-- Two lists of entries, each in id order (newest first if *down*), as one.
local function merged(a, b, down)
  local out, i, j = {}, 1, 1
  while i <= #a or j <= #b do
    local x, y = a[i], b[j]
    if y == nil or (x ~= nil and (x[1] > y[1]) == down) then
      out[#out + 1] = x
      i = i + 1
    else
      out[#out + 1] = y
      j = j + 1
    end
  end
  return out
end
-- At most *count* entries of log *name* with ids from *hi* down to *lo*, newest first.
local function newest(name, lo, hi, count)
  if hi < lo then return {} end
  local s = redis.call('XREVRANGE', log_key(name), hi .. '-0', lo .. '-0', 'COUNT', count)
  local r = redis.call('ZREVRANGEBYSCORE', rev_key(name), hi, lo, 'WITHSCORES', 'LIMIT', 0, count)
  local out = merged(stream_entries(s), rev_entries(r), true)
  while #out > count do table.remove(out) end
  return out
end
-- At most *count* entries of log *name* with ids above *after*, oldest first.
local function oldest(name, after, count)
  local s = redis.call('XRANGE', log_key(name), '(' .. after .. '-0', '+', 'COUNT', count)
  local r = redis.call(
    'ZRANGEBYSCORE', rev_key(name), '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
  local out = merged(stream_entries(s), rev_entries(r), false)
  while #out > count do table.remove(out) end
  return out
end
"""

#: Retention of room logs (see :class:`Retention`): ``hsizes`` holds each
#: logged room's bytes (its stream's frames and its revisions'), ``hbytes``
#: their sum, ``hrooms`` the rooms by last write.  A log that expired is
#: found there and forgotten when its turn comes (it holds nothing any
#: more).
RETAIN = (
    READ
    + r"""
local PER_ROOM, TOTAL, MAX_ROOMS, MAX_AGE_MS = @PER_ROOM@, @TOTAL@, @ROOMS@, @MAX_AGE_MS@
local ROOM_TTL = @TTL@
local function forget_log(room)
  local size = tonumber(redis.call('HGET', P .. 'hsizes', room) or '0')
  redis.call('DEL', log_key(room), rev_key(room))
  redis.call('HDEL', P .. 'hsizes', room)
  redis.call('ZREM', P .. 'hrooms', room)
  redis.call('DECRBY', P .. 'hbytes', size)
end
-- The oldest message of a log, which has *revs* revised messages: {id,
-- frame size, time ms, stream id or false for a revision}; nil if none.
local function oldest_message(room, revs)
  local s = redis.call('XRANGE', log_key(room), '-', '+', 'COUNT', 1)
  local first
  if #s > 0 then
    local id, fields, size, t = s[1][1], s[1][2], 0, 0
    for i = 1, #fields, 2 do
      if fields[i] == 'f' then size = #fields[i + 1]
      elseif fields[i] == 't' then t = tonumber(fields[i + 1]) end
    end
    first = {tonumber(string.match(id, '^%d+')), size, t, id}
  end
  if revs > 0 then
    local r = redis.call('ZRANGE', rev_key(room), 0, 0, 'WITHSCORES')
    if #r > 0 and (first == nil or tonumber(r[2]) < first[1]) then
      local t, frame = string.match(r[1], '^(%d+) %S+ (.*)$')
      first = {tonumber(r[2]), #frame, tonumber(t), false}
    end
  end
  return first
end
-- Remove the oldest message of a log (*revs* as above): false if it has
-- none; else true, and whether it was a revised one.
local function trim_oldest(room, revs)
  local first = oldest_message(room, revs)
  if first == nil then
    forget_log(room)
    return false, false
  end
  if first[4] then
    redis.call('XDEL', log_key(room), first[4])
  else
    redis.call('ZREMRANGEBYSCORE', rev_key(room), first[1], first[1])
  end
  redis.call('HINCRBY', P .. 'hsizes', room, -first[2])
  redis.call('DECRBY', P .. 'hbytes', first[2])
  return true, not first[4]
end
local function retain_log(room, now, retain)
  local log = log_key(room)
  local revs = redis.call('ZCARD', rev_key(room))
  local trimmed, revised
  while redis.call('XLEN', log) + revs > retain
    or tonumber(redis.call('HGET', P .. 'hsizes', room) or '0') > PER_ROOM do
    trimmed, revised = trim_oldest(room, revs)
    if not trimmed then break end
    if revised then revs = revs - 1 end
  end
  if MAX_AGE_MS > 0 then
    local first = oldest_message(room, revs)
    while first ~= nil and first[3] < now - MAX_AGE_MS do
      trimmed, revised = trim_oldest(room, revs)
      if revised then revs = revs - 1 end
      first = oldest_message(room, revs)
    end
  end
  while tonumber(redis.call('GET', P .. 'hbytes') or '0') > TOTAL do
    local victim = redis.call('ZRANGE', P .. 'hrooms', 0, 0)[1]
    if victim == nil then break end
    trim_oldest(victim, redis.call('ZCARD', rev_key(victim)))
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
)

#: Direct conversations (after :data:`RETAIN`): ``convs`` holds every
#: conversation's log name by last write, ``convs:<user>`` the log names of
#: a user's conversations the same way.
CONVERSATIONS = r"""
local MAX_CONVS, PER_USER = @CONVS@, @PER_USER@
-- Forget a conversation (its log name): its ids and messages.
local function forget_conversation(name)
  local a, b = string.match(name, '^(%S+) (%S+)$')
  redis.call('ZREM', P .. 'convs', name)
  redis.call('ZREM', P .. 'convs:' .. a, name)
  redis.call('ZREM', P .. 'convs:' .. b, name)
  forget_log(name)
  redis.call('DEL', P .. 'seq:' .. name, P .. 'rver:' .. name)
end
-- A message in the conversation *name* of *from* and *to*, which is started
-- if new: 'ok', or 'full' ('tofull') past the sender's (addressee's) bound.
local function conversation_used(from, to, name)
  local convs = P .. 'convs'
  if not redis.call('ZSCORE', convs, name) then
    if redis.call('ZCARD', P .. 'convs:' .. from) >= PER_USER then return 'full' end
    if redis.call('ZCARD', P .. 'convs:' .. to) >= PER_USER then return 'tofull' end
    while redis.call('ZCARD', convs) >= MAX_CONVS do
      local oldest = redis.call('ZRANGE', convs, 0, 0)[1]
      if oldest == nil then break end
      forget_conversation(oldest)
    end
  end
  local clock = redis.call('INCR', P .. 'cclock')
  redis.call('ZADD', convs, clock, name)
  redis.call('ZADD', P .. 'convs:' .. from, clock, name)
  redis.call('ZADD', P .. 'convs:' .. to, clock, name)
  return 'ok'
end
"""
