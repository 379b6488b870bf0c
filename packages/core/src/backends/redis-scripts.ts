/**
 * Lua scripts that keep an entry and its tag sets consistent. Each touches keys of one bucket
 * only (same hash tag), so it is atomic on a single server and on Redis Cluster alike.
 *
 * Stored value layout: `<expiresAt ms or empty>[ <tags as JSON>]\n<entry bytes>`. The expiry is checked against
 * the caller's clock as well as enforced by PX, so fake clocks work and a PX that outlives the
 * logical expiry never serves a stale entry.
 */

/** A helper inlined in the scripts: is the stored value `v` live at `now`? */
const LIVE = `
local function live(v, now)
  if not v then return false end
  local exp = string.match(v, '^%d*')
  return exp == '' or tonumber(exp) > now
end
`;

/** Helpers inlined in the writing scripts: the one place an entry's tag memberships change. */
const TAGS = `
local function untag(entry, list, tagPrefix)
  local old = redis.call('SMEMBERS', list)
  for _, t in ipairs(old) do redis.call('SREM', tagPrefix .. t, entry) end
  if #old > 0 then redis.call('DEL', list) end
end
local function store(entry, list, tagPrefix, value, px, firstTag)
  if px == '' then
    redis.call('SET', entry, value)
  else
    redis.call('SET', entry, value, 'PX', px)
  end
  for i = firstTag, #ARGV do
    redis.call('SADD', tagPrefix .. ARGV[i], entry)
    redis.call('SADD', list, ARGV[i])
  end
  if #ARGV >= firstTag and px ~= '' then redis.call('PEXPIRE', list, px) end
end
`;

/**
 * KEYS[1] entry, KEYS[2] the entry's tag list.
 * ARGV[1] value, ARGV[2] PX ms or '', ARGV[3] tag-set key prefix of the bucket,
 * ARGV[4] 'set' | 'add', ARGV[5] now, ARGV[6..] tags.
 * Returns 1 when stored, 0 when `add` found a live entry.
 */
export const SET_SCRIPT = `${LIVE}${TAGS}
local now = tonumber(ARGV[5])
if ARGV[4] == 'add' and live(redis.call('GET', KEYS[1]), now) then return 0 end
untag(KEYS[1], KEYS[2], ARGV[3])
store(KEYS[1], KEYS[2], ARGV[3], ARGV[1], ARGV[2], 6)
return 1
`;

/**
 * KEYS[1] entry, KEYS[2] its tag list. ARGV[1] tag-set key prefix, ARGV[2] now, ARGV[3] '1' to
 * delete only when expired (prune). Returns 1 when a live entry was removed (or, for prune, when
 * an expired one was).
 */
export const DELETE_SCRIPT = `${LIVE}${TAGS}
local now = tonumber(ARGV[2])
local v = redis.call('GET', KEYS[1])
local alive = live(v, now)
if ARGV[3] == '1' and (alive or not v) then return 0 end
untag(KEYS[1], KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
if ARGV[3] == '1' then return 1 end
if alive then return 1 end
return 0
`;

/**
 * KEYS[1] the tag set of one bucket. ARGV[1] entry key prefix of the bucket, ARGV[2] tag-list
 * key prefix, ARGV[3] tag-set key prefix, ARGV[4] now. Removes every entry in the set (and its
 * other tag memberships), then the set. Returns how many live entries went.
 */
export const DELETE_TAG_SCRIPT = `${LIVE}
local now = tonumber(ARGV[4])
local tag = string.sub(KEYS[1], #ARGV[3] + 1)
local members = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, ek in ipairs(members) do
  local v = redis.call('GET', ek)
  -- A member whose tag list no longer names this tag is a leftover: the entry was rewritten
  -- after its old tag list expired. It does not carry the tag, so it stays.
  local kl = ARGV[2] .. string.sub(ek, #ARGV[1] + 1)
  if v and redis.call('SISMEMBER', kl, tag) == 0 then v = nil end
  if v then
    if live(v, now) then n = n + 1 end
    local tags = redis.call('SMEMBERS', kl)
    for _, t in ipairs(tags) do
      if ARGV[3] .. t ~= KEYS[1] then redis.call('SREM', ARGV[3] .. t, ek) end
    end
    redis.call('DEL', ek, kl)
  end
end
redis.call('DEL', KEYS[1])
return n
`;

/**
 * KEYS[1] the tag set of one bucket. ARGV[1] entry key prefix of the bucket, ARGV[2] tag-list key
 * prefix, ARGV[3] the tag, ARGV[4..] members to check. Drops each member whose entry is gone or
 * no longer carries the tag, checked and removed in one step so that an entry written meanwhile
 * keeps its membership. Returns how many members went.
 */
export const PRUNE_MEMBERS_SCRIPT = `
local n = 0
for i = 4, #ARGV do
  local ek = ARGV[i]
  local kl = ARGV[2] .. string.sub(ek, #ARGV[1] + 1)
  if redis.call('EXISTS', ek) == 0 or redis.call('SISMEMBER', kl, ARGV[3]) == 0 then
    n = n + redis.call('SREM', KEYS[1], ek)
  end
end
return n
`;

/**
 * KEYS[1] lock. ARGV[1] owner, ARGV[2] ttl ms, ARGV[3] now, or '' to leave expiry to PX alone
 * (the server's clock: holders on machines whose clocks differ never see each other's lock as
 * expired early), ARGV[4] expiry (now + ttl). Takes the lock when free, expired, or already held
 * by the same owner (which extends it).
 */
export const LOCK_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, '|', 1, true)
  local exp = tonumber(string.sub(v, 1, sep - 1))
  local owner = string.sub(v, sep + 1)
  if owner ~= ARGV[1] and (ARGV[3] == '' or exp > tonumber(ARGV[3])) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[4] .. '|' .. ARGV[1], 'PX', ARGV[2])
return 1
`;

/**
 * KEYS[1] lock. ARGV[1] owner, ARGV[2] now, or '' to leave expiry to PX alone. Releases only a
 * live lock held by `owner`.
 */
export const UNLOCK_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local sep = string.find(v, '|', 1, true)
local exp = tonumber(string.sub(v, 1, sep - 1))
local owner = string.sub(v, sep + 1)
if owner ~= ARGV[1] or (ARGV[2] ~= '' and exp <= tonumber(ARGV[2])) then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * KEYS[1] entry, KEYS[2] the entry's tag list (same bucket).
 * ARGV[1] expected entry bytes, ARGV[2] '1' when expecting no live entry, ARGV[3] 'set' | 'del',
 * ARGV[4] new stored value, ARGV[5] PX ms or '', ARGV[6] tag-set key prefix of the bucket,
 * ARGV[7] now, ARGV[8..] tags. Compares the bytes after the value's header line, which are the
 * entry bytes the backend hands out. Returns 1 when the condition held and the write was applied.
 */
export const COMPARE_AND_SWAP_SCRIPT = `${LIVE}${TAGS}
local now = tonumber(ARGV[7])
local v = redis.call('GET', KEYS[1])
local alive = live(v, now)
if ARGV[2] == '1' then
  if alive then return 0 end
else
  if not alive then return 0 end
  local nl = string.find(v, string.char(10), 1, true)
  if not nl or string.sub(v, nl + 1) ~= ARGV[1] then return 0 end
end
untag(KEYS[1], KEYS[2], ARGV[6])
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
  return 1
end
store(KEYS[1], KEYS[2], ARGV[6], ARGV[4], ARGV[5], 8)
return 1
`;
