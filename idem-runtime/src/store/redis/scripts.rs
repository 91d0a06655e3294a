//! The Lua scripts of the Redis store: each operation is one script, so one atomic step and
//! one round trip.
//!
//! Every operation script takes KEYS[1] the record and KEYS[2] the key space's marker, ARGV[1]
//! the caller's clock in ms (empty: the server's `TIME`, the one clock a fleet shares) and
//! ARGV[2] the quarantine after a loss in ms. Its reply starts with 1 when it found the marker
//! gone (the store forgot what it held, and this call started the quarantine), else 0.

use std::sync::OnceLock;

use redis::Script;

/// What every script does first: `now`, in milliseconds, from the server's clock, or from
/// ARGV[1] when the store has a clock injected.
const CLOCK: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
";

/// What every operation does next: check the marker. A missing marker
/// means the store lost its keys (a restart without persistence, a failover to a replica that
/// missed it, a flush): claims it held may still be running, so no claim is granted until
/// every lease that could have been running has run out. The marker has no expiry.
const PRELUDE: &str = r"
local forgot = 0
local quarantine = tonumber(redis.call('HGET', KEYS[2], 'q'))
if not quarantine then
  forgot = 1
  quarantine = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], 'q', quarantine, 'c', now)
end
";

/// Claim-or-report. ARGV[3] fingerprint, ARGV[4] token, ARGV[5] lease ms, ARGV[6] key expiry ms.
/// Replies `{_, 'A', deadline}` acquired, `{_, 'C', record}` completed, `{_, 'M'}` mismatch,
/// `{_, 'I', ms left}` in flight, `{_, 'R', ms left}` recovering (quarantine).
const CLAIM: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'd', 'r')
if h[1] and tonumber(h[3]) > now then
  if h[2] ~= ARGV[3] then return {forgot, 'M'} end
  if h[1] == 'c' then return {forgot, 'C', h[4]} end
  return {forgot, 'I', tonumber(h[3]) - now}
end
if quarantine > now then return {forgot, 'R', quarantine - now} end
local d = now + tonumber(ARGV[5])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', 'i', 't', ARGV[4], 'f', ARGV[3], 'd', d)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {forgot, 'A', d}
";

/// Owner only: the claim with token ARGV[3] holds for ARGV[4] ms more (key expiry ARGV[5] ms).
/// ARGV[6] and ARGV[7], the claim's fingerprint and the deadline its owner last obtained (empty
/// when unknown): a claim that vanished while that deadline is still ahead was forgotten by the
/// store, and its owner re-asserts it, unless another claim or a record holds the key.
/// Replies `{_, 1, deadline}` renewed, `{_, 2, deadline}` re-asserted, `{_, 0, 0}` lost.
const RENEW: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 't', 'd')
local d = now + tonumber(ARGV[4])
if h[1] == 'i' and h[2] == ARGV[3] then
  redis.call('HSET', KEYS[1], 'd', d)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {forgot, 1, d}
end
if (not h[1] or tonumber(h[3]) <= now) and ARGV[7] ~= '' and tonumber(ARGV[7]) > now then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 's', 'i', 't', ARGV[3], 'f', ARGV[6], 'd', d)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {forgot, 2, d}
end
return {forgot, 0, 0}
";

/// Owner only: the claim with token ARGV[3] becomes the record ARGV[4], kept ARGV[5] ms (key
/// expiry ARGV[6] ms). ARGV[7] the record's fingerprint, ARGV[8] the deadline the owner last
/// obtained (empty when unknown), to store a record whose claim the store forgot, as in RENEW.
/// A record this owner already stored (an attempt whose reply was lost) counts as stored.
/// Replies `{_, 1}` stored, `{_, 2}` stored over a forgotten claim, `{_, 0}` lost.
const COMPLETE: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 't', 'd')
local mine = h[2] == ARGV[3]
if h[1] == 'c' and mine then return {forgot, 1} end
local held = h[1] == 'i' and mine
if held or ((not h[1] or tonumber(h[3]) <= now) and ARGV[8] ~= '' and tonumber(ARGV[8]) > now) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 's', 'c', 't', ARGV[3], 'f', ARGV[7], 'r', ARGV[4], 'd', now + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  if held then return {forgot, 1} end
  return {forgot, 2}
end
return {forgot, 0}
";

/// Owner only: drop the in-flight claim with token ARGV[3]. Replies `{_, 1}` or `{_, 0}` lost.
const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 's', 't')
if h[1] == 'i' and h[2] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return {forgot, 1}
end
return {forgot, 0}
";

/// At connect: KEYS[1] the marker, ARGV[1] the clock as above, ARGV[2] how long to quarantine
/// from now if the marker is missing (0: not at all). Replies `{created, ms of quarantine left}`.
const CONNECT: &str = r"
local q = tonumber(redis.call('HGET', KEYS[1], 'q'))
if q then return {0, math.max(q - now, 0)} end
local wait = tonumber(ARGV[2])
q = 0
if wait > 0 then q = now + wait end
redis.call('HSET', KEYS[1], 'q', q, 'c', now)
return {1, math.max(wait, 0)}
";

pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
    pub(super) connect: Script,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let operation = |body: &str| Script::new(&format!("{CLOCK}{PRELUDE}{body}"));
        Scripts {
            claim: operation(CLAIM),
            renew: operation(RENEW),
            complete: operation(COMPLETE),
            release: operation(RELEASE),
            connect: Script::new(&format!("{CLOCK}{CONNECT}")),
        }
    })
}

impl Scripts {
    pub(super) fn all(&self) -> [&Script; 5] {
        [&self.claim, &self.renew, &self.complete, &self.release, &self.connect]
    }
}
