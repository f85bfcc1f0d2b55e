"""The Lua scripts of the Redis backplane that write and read logs: chat
messages, direct messages, a room's load, revisions of messages, history
pages and fills (see :mod:`trio_chat._backplane_lua` for the channel
messages they publish, and :mod:`trio_chat._backplane_lua_base` for the
functions they share).
"""

from __future__ import annotations

from ._backplane_lua_base import COMMON, CONVERSATIONS, READ, REMEMBER, RETAIN

__all__ = ["CHATS", "DIRECT", "FILL", "LISTING", "LOAD", "PAGE", "REVISE", "REVISIONS"]

#: Several chat messages, each as atomic as one script: for each, check the
#: sender's ref, take the room's next id, append the frame to the room's
#: stream (within :class:`Retention`), publish it, remember the ref.  ARGV:
#: prefix, epoch, ref memory, retain, the chat and ack frames' text before
#: their id, then 7 per message: room, user, ref, create ('1'/'0'), the
#: frame's and the ack's text after the id, origin.  The ack is what the
#: ref remembers.  Answers one result per message.
CHATS = (
    REMEMBER
    + r"""
local P, epoch, limit, retain = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local CHAT, ACK = ARGV[5], ARGV[6]
"""
    + RETAIN
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
      redis.call('EXPIRE', P .. 'rev:' .. room, ROOM_TTL)
      redis.call('EXPIRE', P .. 'rver:' .. room, ROOM_TTL)
      redis.call('EXPIRE', P .. 'topic:' .. room, ROOM_TTL)
      redis.call('ZADD', P .. 'dir', 0, room)
      redis.call('ZADD', P .. 'dirx', now + ROOM_TTL * 1000, room)
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

#: A direct message: check the sender's ref; start the conversation of the
#: two users if new (within ``max_conversations_per_user`` for each, and
#: ``max_conversations`` in all: past it the least recently written
#: conversation is forgotten, with its ids); take its next id and append
#: the frame to its log (the stream ``log:<FROM TO>``, the two ids sorted,
#: within :class:`Retention` as a room's); for each of the two users who is
#: connected somewhere, append the ``direct`` frame to their inbox (the log
#: ``@user``, which only carries it to their processes: ids of its own) and
#: publish it there; remember the ref.  ARGV: prefix, epoch, ref memory,
#: retain, from, to, the conversation's log name, ref, origin, then the chat
#: frame's, the ``direct`` frame's and the ack's text before their id and
#: after it.  Answers ``{'ok', id, the sender's inbox id, the addressee's}``
#: (0 for a user not connected), ``{'dup', ack}``, ``{'self'}`` (to the
#: sender), ``{'full'}`` (the sender's bound), ``{'tofull'}`` (the
#: addressee's) or ``{'epoch'}``.
DIRECT = (
    REMEMBER
    + r"""
local P, epoch, limit, retain = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local from, to, name, ref, origin = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
"""
    + RETAIN
    + CONVERSATIONS
    + r"""
if redis.call('GET', P .. 'epoch') ~= epoch then return {'epoch'} end
local refs, queue = P .. 'refs:' .. from, P .. 'refq:' .. from
if ref ~= '' then
  local seen = redis.call('HGET', refs, ref)
  if seen then return {'dup', seen} end
end
if from == to then return {'self'} end
local status = conversation_used(from, to, name)
if status ~= 'ok' then return {status} end
local id = redis.call('INCR', P .. 'seq:' .. name)
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local frame = ARGV[10] .. id .. ARGV[11]
redis.call('XADD', P .. 'log:' .. name, id .. '-0', 'o', origin, 'f', frame, 't', now)
logged(name, #frame, now, retain)
local direct = ARGV[12] .. id .. ARGV[13]
local inboxes = {0, 0}
for i, user in ipairs({from, to}) do
  if redis.call('HEXISTS', P .. 'online', user) == 1 then
    local n = redis.call('INCR', P .. 'dmseq:' .. user)
    local inbox = P .. 'dm:' .. user
    redis.call('XADD', inbox, n .. '-0', 'o', origin, 'f', direct, 't', now)
    redis.call('EXPIRE', inbox, 86400)
    logged('@' .. user, #direct, now, retain)
    redis.call('PUBLISH', P .. 'ch:u:' .. user, 'm ' .. n .. ' ' .. origin .. ' - ' .. direct)
    inboxes[i] = n
  end
end
if ref ~= '' then remember(refs, queue, ref, ARGV[14] .. id .. ARGV[15], limit) end
return {'ok', id, inboxes[1], inboxes[2]}
"""
)


#: ARGV: prefix, room, history count, history bytes, candidate epoch.  The
#: history is the newest entries whose frames add up to that many bytes at
#: most, newest first; with the room's revision and topic ('': none).
LOAD = (
    COMMON
    + READ
    + r"""
local room = ARGV[2]
local epoch = room_epoch(room, ARGV[5])
local last = tonumber(redis.call('GET', P .. 'seq:' .. room) or '0')
local entries = {}
if tonumber(ARGV[3]) > 0 then
  local budget = tonumber(ARGV[4])
  for _, entry in ipairs(newest(room, 1, last, tonumber(ARGV[3]))) do
    budget = budget - #entry[3]
    if budget < 0 then break end
    entries[#entries + 1] = entry
  end
end
local revision = tonumber(redis.call('GET', P .. 'rver:' .. room) or '0')
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
local topic = redis.call('GET', P .. 'topic:' .. room) or ''
return {last, entries, members, version, presence, epoch, revision, topic}
"""
)

#: A message's new version, if this process knew its current one: with
#: *expected* its current frame, put *frame* in its place (in ``rev``, out
#: of the stream, within :class:`Retention`), take the room's next revision
#: and publish the *event* with it.  ARGV: prefix, room, id, expected,
#: frame, event, origin, retain.  Answers ``{'ok', revision}``, ``{'stale',
#: current frame}`` (nothing changed: *expected* is not what Redis has; ''
#: asks for the current frame), ``{'gone'}`` (not retained), or
#: ``{'nolog'}`` (a conversation's log name, and no such conversation).  A
#: conversation's *event* is two frames, a newline between them: the one
#: for the first user of its log name, then the other's.
REVISE = (
    COMMON
    + RETAIN
    + r"""
local room, id, expected = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local log, rev = P .. 'log:' .. room, P .. 'rev:' .. room
local conversation = string.find(room, ' ', 1, true)
if conversation and redis.call('EXISTS', P .. 'seq:' .. room) == 0 then return {'nolog'} end
local found = redis.call('ZRANGEBYSCORE', rev, id, id)
local time, origin, current, stream_id
if #found > 0 then
  time, origin, current = string.match(found[1], '^(%d+) (%S+) (.*)$')
else
  local raw = redis.call('XRANGE', log, ARGV[3] .. '-0', ARGV[3] .. '-0')
  if #raw == 0 then return {'gone'} end
  local entry, fields = stream_entries(raw)[1], raw[1][2]
  origin, current, stream_id, time = entry[2], entry[3], raw[1][1], '0'
  for i = 1, #fields, 2 do
    if fields[i] == 't' then time = fields[i + 1] end
  end
end
if current ~= expected then return {'stale', current} end
if stream_id then
  redis.call('XDEL', log, stream_id)
else
  redis.call('ZREMRANGEBYSCORE', rev, id, id)
end
local frame = ARGV[5]
redis.call('ZADD', rev, id, time .. ' ' .. origin .. ' ' .. frame)
local revision = redis.call('INCR', P .. 'rver:' .. room)
local delta = #frame - #current
redis.call('HINCRBY', P .. 'hsizes', room, delta)
redis.call('INCRBY', P .. 'hbytes', delta)
if not conversation then room_expiry(room) end
retain_log(room, now_ms(), tonumber(ARGV[8]))
local notice = table.concat({'v', revision, ARGV[7], ARGV[3], ARGV[6]}, ' ')
redis.call('PUBLISH', P .. 'ch:r:' .. room, notice .. '\n' .. frame)
return {'ok', revision}
"""
)

#: A page of a room's history: the newest messages with ids from *lo* to
#: *hi* ('' for the room's last id) whose frames add up to *budget* bytes,
#: the one that crosses it included, at most *count* of them.  ARGV:
#: prefix, room, lo, hi, budget, count.  Answers ``{hi, entries, last}``
#: (hi clipped to the last id, *last*; entries newest first).
PAGE = (
    COMMON
    + READ
    + r"""
local room = ARGV[2]
local last = tonumber(redis.call('GET', P .. 'seq:' .. room) or '0')
local hi = last
if ARGV[4] ~= '' then hi = math.min(hi, tonumber(ARGV[4])) end
local budget, entries = tonumber(ARGV[5]), {}
for _, entry in ipairs(newest(room, tonumber(ARGV[3]), hi, tonumber(ARGV[6]))) do
  entries[#entries + 1] = entry
  budget = budget - #entry[3]
  if budget < 0 then break end
end
return {hi, entries, last}
"""
)

#: The revised messages of a room with ids from *lo* on, and its revision.
#: ARGV: prefix, room, lo.  Answers ``{revision, entries}``.
REVISIONS = (
    COMMON
    + READ
    + r"""
local room = ARGV[2]
local revision = tonumber(redis.call('GET', P .. 'rver:' .. room) or '0')
local raw = redis.call('ZRANGEBYSCORE', rev_key(room), ARGV[3], '+inf', 'WITHSCORES')
return {revision, rev_entries(raw)}
"""
)

#: A room's entries after an id, oldest first (a fill). ARGV: prefix, room,
#: after, count.
FILL = (
    COMMON
    + READ
    + r"""
return oldest(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
"""
)

#: A user's conversations, most recently written first: for each, its log
#: name, last id, the user's read marker in it, and its newest entries
#: down to the one after the marker (at least the newest), at most *per*.
#: ARGV: prefix, user, count, per.
LISTING = (
    COMMON
    + READ
    + r"""
local user, count, per = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local marks = P .. 'marks:' .. user
local out = {}
for _, name in ipairs(redis.call('ZREVRANGE', P .. 'convs:' .. user, 0, count - 1)) do
  local last = tonumber(redis.call('GET', P .. 'seq:' .. name) or '0')
  local read = tonumber(redis.call('HGET', marks, name) or '0')
  local lo = math.max(1, math.min(read + 1, last))
  out[#out + 1] = {name, last, read, newest(name, lo, last, per)}
end
return out
"""
)
