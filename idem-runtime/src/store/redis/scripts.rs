//! The Lua scripts of the Redis store: each operation is one script, so one atomic step and
//! one round trip.
//!
//! Every operation script takes KEYS[1] the record and KEYS[2] its bucket's marker (one hash
//! tag, so one slot in a cluster), ARGV[1] the caller's clock in ms (empty: the server's
//! `TIME`, the one clock a fleet shares) and ARGV[2] the quarantine after a loss in ms. Its reply starts with 1 when it found the marker
//! gone (the store forgot what it held, and this call started the quarantine), else 0.

use std::sync::OnceLock;

use redis::Script;

use super::layout::{COMPLETED, HEADER_LEN, IN_FLIGHT, RECORD_FINGERPRINT_AT};

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

/// What every operation does next: read the record's value (see the layout module). A value
/// in no layout this version reads is an error, never a record.
const READ: &str = r"
local v = redis.call('GET', KEYS[1])
local state, deadline = 0, 0
if v then
  state = string.byte(v, 1)
  if (state ~= @IN_FLIGHT@ and state ~= @COMPLETED@) or #v < @HEADER_LEN@ then
    return redis.error_reply('idem: the value at this key is not in a layout this version of the idempotency store reads')
  end
  deadline = struct.unpack('>I8', v, 10)
end
-- A claim its owner released: a deadline of 0 and no fingerprint (see the layout module).
local released = state == @IN_FLIGHT@ and deadline == 0
-- A claim some request waits for, listening on the key's channel: its end is published.
local waited = state == @IN_FLIGHT@ and #v > @HEADER_LEN@ + 32
-- Whether the owner whose claim's deadline was `d` ('' when unknown) may re-assert it: the
-- key holds nothing live and no release, and that deadline is still ahead.
local function forgotten(d)
  return (state == 0 or deadline <= now) and not released and d ~= '' and tonumber(d) > now
end
local function token_of()
  return string.sub(v, 2, 9)
end
local function fingerprint_of()
  if state == @IN_FLIGHT@ then return string.sub(v, @FP_IN_FLIGHT@, @FP_IN_FLIGHT@ + 31) end
  return string.sub(v, @FP_COMPLETED@, @FP_COMPLETED@ + 31)
end
local function in_flight(token, d, fingerprint)
  return '\@IN_FLIGHT@' .. token .. struct.pack('>I8', d) .. fingerprint
end
";

/// Then check the bucket's marker (KEYS[2]). A missing marker means the store lost this
/// bucket's keys (a restart without persistence, a failover to a replica that missed it, a
/// flush): claims it held may still be running, so no claim is granted until every lease that
/// could have been running has run out. The marker has no expiry.
const PRELUDE: &str = r"
local forgot = 0
local quarantine = tonumber(redis.call('HGET', KEYS[2], 'q'))
if not quarantine then
  forgot = 1
  quarantine = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], 'q', quarantine, 'c', now)
end
";

/// Claim-or-report. ARGV[3] fingerprint, ARGV[4] token (8 bytes), ARGV[5] lease ms, ARGV[6]
/// key expiry ms. Replies `{_, 'A', deadline}` acquired, `{_, 'C', value}` completed,
/// `{_, 'M'}` mismatch, `{_, 'I', ms left}` in flight, `{_, 'R', ms left}` recovering
/// (quarantine).
const CLAIM: &str = r"
if state ~= 0 and deadline > now then
  if fingerprint_of() ~= ARGV[3] then return {forgot, 'M'} end
  if state == @COMPLETED@ then return {forgot, 'C', v} end
  return {forgot, 'I', deadline - now}
end
if quarantine > now then return {forgot, 'R', quarantine - now} end
local d = now + tonumber(ARGV[5])
redis.call('SET', KEYS[1], in_flight(ARGV[4], d, ARGV[3]), 'PX', ARGV[6])
return {forgot, 'A', d}
";

/// Owner only: the claim with token ARGV[3] holds for ARGV[4] ms more (key expiry ARGV[5] ms).
/// ARGV[6] and ARGV[7], the claim's fingerprint and the deadline its owner last obtained (empty
/// when unknown): a claim that vanished while that deadline is still ahead was forgotten by the
/// store, and its owner re-asserts it, unless another claim, a record or a release holds the
/// key. Replies `{_, 1, deadline}` renewed, `{_, 2, deadline}` re-asserted, `{_, 0, 0}` lost.
const RENEW: &str = r"
local d = now + tonumber(ARGV[4])
if state == @IN_FLIGHT@ and not released and token_of() == ARGV[3] then
  local mark = ''
  if waited then mark = 'w' end
  redis.call('SET', KEYS[1], in_flight(ARGV[3], d, fingerprint_of()) .. mark, 'PX', ARGV[5])
  return {forgot, 1, d}
end
if forgotten(ARGV[7]) then
  redis.call('SET', KEYS[1], in_flight(ARGV[3], d, ARGV[6]), 'PX', ARGV[5])
  return {forgot, 2, d}
end
return {forgot, 0, 0}
";

/// Owner only: the claim with token ARGV[3] becomes the record ARGV[4] (its byte encoding),
/// kept ARGV[5] ms (key expiry ARGV[6] ms). ARGV[7] the deadline the owner last obtained
/// (empty when unknown), to store a record whose claim the store forgot, as in RENEW. A
/// record this owner already stored (an attempt whose reply was lost) counts as stored; a
/// claim it released stays released.
/// ARGV[8] `1` to publish the stored record on the key's channel (its name, KEYS[1]) when a
/// request waits for the key (WAITED marked the claim), empty not to (a cluster).
/// Replies `{_, 1}` stored, `{_, 2}` stored over a forgotten claim, `{_, 0}` lost.
const COMPLETE: &str = r"
local mine = state ~= 0 and token_of() == ARGV[3]
if state == @COMPLETED@ and mine then return {forgot, 1} end
local held = state == @IN_FLIGHT@ and not released and mine
if held or forgotten(ARGV[7]) then
  local d = now + tonumber(ARGV[5])
  redis.call('SET', KEYS[1], '\@COMPLETED@' .. ARGV[3] .. struct.pack('>I8', d) .. ARGV[4], 'PX', ARGV[6])
  if waited and ARGV[8] ~= '' then redis.call('PUBLISH', KEYS[1], '') end
  if held then return {forgot, 1} end
  return {forgot, 2}
end
return {forgot, 0}
";

/// Owner only: the in-flight claim with token ARGV[3] is released. The key keeps a mark of the
/// release (see the layout module) until the claim's lease deadline has passed, plus a second,
/// and at least ARGV[5] ms (the key expiry floor under an injected clock): a renewal or a
/// completion of this owner still on its way then finds the release, not a claim the store
/// forgot, and is refused instead of putting the claim back. ARGV[4] the deadline the owner
/// last obtained (empty when unknown): a claim the store forgot is marked released all the
/// same while that deadline is ahead. ARGV[6] `1` to publish the release on the key's channel (its
/// name, KEYS[1]) when a request waits for the key (WAITED marked the claim), empty not to. Replies `{_, 1}` released or `{_, 0}` lost.
const RELEASE: &str = r"
local function mark_released(until_ms)
  local px = math.max(math.max(until_ms - now, 0) + 1000, tonumber(ARGV[5]))
  redis.call('SET', KEYS[1], in_flight(ARGV[3], 0, ''), 'PX', px)
end
if state == @IN_FLIGHT@ and not released and token_of() == ARGV[3] then
  local publish = waited and ARGV[6] ~= ''
  mark_released(deadline)
  if publish then redis.call('PUBLISH', KEYS[1], '') end
  return {forgot, 1}
end
if state == 0 and ARGV[4] ~= '' and tonumber(ARGV[4]) > now then
  mark_released(tonumber(ARGV[4]))
end
return {forgot, 0}
";

/// A request waits for the key, listening on its channel: a live claim is marked (a byte after
/// its fingerprint, kept by renewals), so that its completion or release publishes. Replies
/// `{_, 1}`.
const WAITED: &str = r"
if state == @IN_FLIGHT@ and not released and deadline > now and not waited then
  redis.call('SET', KEYS[1], v .. 'w', 'KEEPTTL')
end
return {forgot, 1}
";

/// Opens buckets: KEYS their markers, ARGV[1] the clock as above, ARGV[2] how long to
/// quarantine from now a bucket whose marker is missing (0: not at all), ARGV[3] `1` to shorten
/// that by the server's uptime (at connect: a server that started a while ago lost nothing
/// since, and a missing marker is a new bucket). Replies `{markers written, longest ms of
/// quarantine left}`.
const OPEN: &str = r"
local wait = tonumber(ARGV[2])
if ARGV[3] == '1' then
  local info = redis.pcall('INFO', 'server')
  local up = type(info) == 'string' and tonumber(string.match(info, 'uptime_in_seconds:(%d+)'))
  if up then wait = wait - up * 1000 end
end
local written, left = 0, 0
for _, marker in ipairs(KEYS) do
  local q = tonumber(redis.call('HGET', marker, 'q'))
  if not q then
    written = written + 1
    q = 0
    if wait > 0 then q = now + wait end
    redis.call('HSET', marker, 'q', q, 'c', now)
  end
  left = math.max(left, q - now)
end
return {written, left}
";

pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
    pub(super) waited: Script,
    pub(super) open: Script,
}

pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let operation = |body: &str| Script::new(&with_layout(&format!("{CLOCK}{READ}{PRELUDE}{body}")));
        Scripts {
            claim: operation(CLAIM),
            renew: operation(RENEW),
            complete: operation(COMPLETE),
            release: operation(RELEASE),
            waited: operation(WAITED),
            open: Script::new(&format!("{CLOCK}{OPEN}")),
        }
    })
}

/// `script` with the value layout's constants written in (Lua strings are 1-based).
fn with_layout(script: &str) -> String {
    script
        .replace("@IN_FLIGHT@", &IN_FLIGHT.to_string())
        .replace("@COMPLETED@", &COMPLETED.to_string())
        .replace("@HEADER_LEN@", &HEADER_LEN.to_string())
        .replace("@FP_IN_FLIGHT@", &(HEADER_LEN + 1).to_string())
        .replace("@FP_COMPLETED@", &(HEADER_LEN + RECORD_FINGERPRINT_AT + 1).to_string())
}

impl Scripts {
    pub(super) fn all(&self) -> [&Script; 6] {
        [&self.claim, &self.renew, &self.complete, &self.release, &self.waited, &self.open]
    }
}
