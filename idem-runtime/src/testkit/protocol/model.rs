//! The reference model of the protocol: what a store holds per key, who is live, and which
//! answer each operation may get.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::KEYS;
use crate::record::Record;
use crate::store::{Claim, ClaimToken, RecordKey, StoreError};
use crate::testkit::fingerprint;

/// The model's view of one key: what the store holds.
#[derive(Clone, Debug)]
pub(super) enum Slot {
    Empty,
    Claimed { holder: Holder, fingerprint: u8, deadline: u64 },
    Completed { record: Record, holder: Holder },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    Owner(usize),
    /// A claim whose reply was lost: nobody knows its token.
    Orphan,
}

#[derive(Clone)]
pub(super) struct KeyModel {
    pub(super) key: RecordKey,
    pub(super) slot: Slot,
    /// A record the store forgot, which a local tier in front may still replay.
    pub(super) lost: Option<Record>,
}

#[derive(Clone)]
pub(super) struct OwnerModel {
    pub(super) key: usize,
    pub(super) fingerprint: u8,
    pub(super) token: ClaimToken,
    /// The lease deadline its last effective claim or renewal set.
    pub(super) deadline: u64,
    /// Still acting: not finished, not crashed.
    pub(super) active: bool,
    /// Its claim was forgotten by the store while it held it.
    pub(super) vanished: bool,
    /// The store still knows this claim (a forgetting store keeps what re-asserting needs
    /// until the claim is completed, released or found lost).
    pub(super) known: bool,
    /// The record of a completion that failed, retried as it is.
    pub(super) pending: Option<Record>,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Quarantine {
    None,
    /// The store forgot; the first operation reaching it starts the quarantine.
    Pending,
    /// New claims wait until a time in `lo..=hi` (exact once an answer told).
    Until {
        lo: u64,
        hi: u64,
    },
}

pub(super) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone)]
pub(super) struct Model {
    /// The clock at the start of the case, for the log.
    pub(super) start: u64,
    pub(super) now: u64,
    pub(super) forgetting: bool,
    pub(super) keys: Vec<KeyModel>,
    pub(super) owners: Vec<OwnerModel>,
    /// The store's longest lease: known to lie in `lo..=hi` (a claim a local tier may have
    /// answered may or may not have reached the store).
    pub(super) max_lease: (u64, u64),
    pub(super) quarantine: Quarantine,
    pub(super) tokens: HashSet<ClaimToken>,
}

pub(super) type Check = Result<(), String>;

pub(super) fn expect(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

impl Model {
    pub(super) fn live_slot(&self, key: usize) -> bool {
        match &self.keys[key].slot {
            Slot::Empty => false,
            Slot::Claimed { deadline, .. } => *deadline > self.now,
            Slot::Completed { record, .. } => ms(record.expires_at) > self.now,
        }
    }

    /// Whether `owner` is live: acting, within its lease, and its claim in the store or
    /// forgotten by it.
    pub(super) fn is_live(&self, owner: usize) -> bool {
        let o = &self.owners[owner];
        let holds = matches!(self.keys[o.key].slot, Slot::Claimed { holder: Holder::Owner(h), .. } if h == owner);
        o.active && o.deadline > self.now && (holds || o.vanished)
    }

    pub(super) fn live_owners(&self, key: usize) -> Vec<usize> {
        (0..self.owners.len()).filter(|&o| self.owners[o].key == key && self.is_live(o)).collect()
    }

    /// The invariant: at most one live owner per key.
    pub(super) fn check_invariants(&self) -> Check {
        for key in 0..KEYS {
            let live = self.live_owners(key);
            expect(live.len() <= 1, || format!("INVARIANT: key {key} has several live owners: {live:?}"))?;
        }
        Ok(())
    }

    /// An operation reached the store (`certain`), or may have (a claim a tier could have
    /// answered), asking for `lease`.
    pub(super) fn reach(&mut self, certain: bool, lease: Option<u64>) {
        if let Some(lease) = lease {
            if certain {
                self.max_lease.0 = self.max_lease.0.max(lease);
            }
            self.max_lease.1 = self.max_lease.1.max(lease);
        }
        if certain && matches!(self.quarantine, Quarantine::Pending) {
            self.quarantine = Quarantine::Until { lo: self.now + self.max_lease.0, hi: self.now + self.max_lease.1 };
        }
    }

    /// Whether `owner` re-asserts its forgotten claim now.
    pub(super) fn reasserts(&self, owner: usize) -> bool {
        let o = &self.owners[owner];
        self.forgetting && o.vanished && o.known && o.deadline > self.now && !self.live_slot(o.key)
    }

    pub(super) fn claim(
        &mut self,
        key: usize,
        fp: u8,
        lease: u64,
        answer: &Result<Claim, StoreError>,
    ) -> Result<Granted, String> {
        let now = self.now;
        let slot_live = self.live_slot(key);
        // A local tier may answer from a forgotten record it cached; the store itself cannot
        // (the key is empty there), so such an answer never reached it.
        if let (false, Some(lost)) = (slot_live, &self.keys[key].lost) {
            if ms(lost.expires_at) > now {
                let from_tier = match answer {
                    Ok(Claim::Completed(record)) => **record == *lost,
                    Ok(Claim::Mismatch) => lost.fingerprint != fingerprint(fp),
                    _ => false,
                };
                if from_tier {
                    return Ok(Granted::No);
                }
            }
            // The store answered: no tier holds the forgotten record.
            self.keys[key].lost = None;
        }
        let tier_may_answer = matches!(self.keys[key].slot, Slot::Completed { .. }) && slot_live;
        self.reach(!tier_may_answer, Some(lease));
        let slot = self.keys[key].slot.clone();
        match (slot_live, slot) {
            (true, Slot::Completed { record, .. }) => match answer {
                Ok(Claim::Completed(got)) if record.fingerprint == fingerprint(fp) => {
                    expect(**got == record, || format!("the replay is not the record stored: {got:?} != {record:?}"))?;
                    Ok(Granted::No)
                }
                Ok(Claim::Mismatch) if record.fingerprint != fingerprint(fp) => Ok(Granted::No),
                Ok(Claim::Acquired(_)) => {
                    Err(format!("INVARIANT: key {key} completed (ttl left) was granted again: {answer:?}"))
                }
                other => Err(format!("claim of completed key {key}: expected its record or a mismatch, got {other:?}")),
            },
            (true, Slot::Claimed { fingerprint: held, deadline, .. }) => match answer {
                Ok(Claim::InFlight { lease_left }) if held == fp => {
                    let left = deadline - now;
                    expect(*lease_left == Duration::from_millis(left), || {
                        format!("in-flight key {key}: lease left {lease_left:?}, expected {left} ms")
                    })?;
                    Ok(Granted::No)
                }
                Ok(Claim::Mismatch) if held != fp => Ok(Granted::No),
                other => Err(format!("claim of in-flight key {key}: expected a conflict or mismatch, got {other:?}")),
            },
            _ => {
                let (may_wait, may_acquire) = match self.quarantine {
                    Quarantine::Until { lo, hi } if self.forgetting && now < hi => (true, now >= lo),
                    Quarantine::Pending => unreachable!("the claim started the quarantine"),
                    _ => (false, true),
                };
                if let Ok(Claim::Acquired(_)) = answer {
                    let live = self.live_owners(key);
                    expect(live.is_empty(), || {
                        format!("INVARIANT: key {key} granted while owner(s) {live:?} may still be running")
                    })?;
                }
                match answer {
                    Ok(Claim::Acquired(token)) if may_acquire => {
                        expect(self.tokens.insert(*token), || format!("token {token:?} handed out twice"))?;
                        if let Quarantine::Until { lo, hi } = self.quarantine {
                            self.quarantine = Quarantine::Until { lo, hi: hi.min(now) };
                        }
                        Ok(Granted::Yes(*token, now + lease))
                    }
                    Err(StoreError::Recovering { retry_after }) if may_wait => {
                        let Quarantine::Until { lo, hi } = self.quarantine else { unreachable!() };
                        let until = now + retry_after.as_millis() as u64;
                        expect(lo.max(now + 1) <= until && until <= hi, || {
                            format!("recovering until {until}, the model says {lo}..={hi} (now {now})")
                        })?;
                        self.quarantine = Quarantine::Until { lo: until, hi: until };
                        Ok(Granted::No)
                    }
                    other => Err(format!(
                        "claim of free key {key}: expected {}, got {other:?}",
                        match (may_wait, may_acquire) {
                            (true, true) => "Acquired or Recovering",
                            (true, false) => "Recovering",
                            _ => "Acquired",
                        }
                    )),
                }
            }
        }
    }

    pub(super) fn renew(
        &mut self,
        owner: usize,
        lease: u64,
        answer: &Result<(), StoreError>,
    ) -> Result<&'static str, String> {
        self.reach(true, Some(lease));
        let key = self.owners[owner].key;
        let holds = matches!(self.keys[key].slot, Slot::Claimed { holder: Holder::Owner(h), .. } if h == owner);
        let reasserts = !holds && self.reasserts(owner);
        match answer {
            Ok(()) if holds || reasserts => {
                if reasserts {
                    let live = self.live_owners(key);
                    expect(live == [owner], || format!("INVARIANT: owner {owner} re-asserted beside {live:?}"))?;
                }
                let deadline = self.now + lease;
                let o = &mut self.owners[owner];
                (o.deadline, o.vanished) = (deadline, false);
                self.keys[key].slot = Slot::Claimed {
                    holder: Holder::Owner(owner),
                    fingerprint: self.owners[owner].fingerprint,
                    deadline,
                };
                Ok(if reasserts { "renew: re-asserted" } else { "renew: renewed" })
            }
            Err(StoreError::LeaseLost) if !holds && !reasserts => {
                self.owners[owner].known = false;
                Ok("renew: lease lost")
            }
            other => Err(format!(
                "renew by owner {owner}: expected {}, got {other:?}",
                if holds || reasserts { "Ok" } else { "LeaseLost" }
            )),
        }
    }

    pub(super) fn complete(
        &mut self,
        owner: usize,
        record: &Record,
        answer: &Result<(), StoreError>,
    ) -> Result<&'static str, String> {
        self.reach(true, None);
        let key = self.owners[owner].key;
        let expired = ms(record.expires_at) <= self.now;
        let slot = self.keys[key].slot.clone();
        let mine = |holder: &Holder| *holder == Holder::Owner(owner);
        let outcome = match (&slot, answer) {
            // A retry of a completion that took effect: stored already, or the claim is gone.
            (Slot::Completed { holder, record: stored }, Ok(()) | Err(StoreError::LeaseLost)) if mine(holder) => {
                expect(stored == record, || "a retried completion carries another record".to_owned())?;
                "complete: already stored"
            }
            (Slot::Claimed { holder, .. }, Ok(())) if mine(holder) => {
                self.keys[key].slot =
                    if expired { Slot::Empty } else { Slot::Completed { record: record.clone(), holder: *holder } };
                if expired {
                    "complete: expired record, released"
                } else {
                    "complete: stored"
                }
            }
            (_, Ok(())) if !expired && self.reasserts(owner) => {
                let live = self.live_owners(key);
                expect(live == [owner], || format!("INVARIANT: owner {owner} re-asserted beside {live:?}"))?;
                self.keys[key].slot = Slot::Completed { record: record.clone(), holder: Holder::Owner(owner) };
                "complete: stored over a forgotten claim"
            }
            (_, Err(StoreError::LeaseLost))
                if !matches!(&slot, Slot::Claimed { holder, .. } if mine(holder))
                    && (expired || !self.reasserts(owner)) =>
            {
                "complete: lease lost"
            }
            (Slot::Completed { holder, .. }, Ok(())) if self.live_slot(key) => {
                return Err(format!("INVARIANT: stale owner {owner} replaced the record completed by {holder:?}"));
            }
            (_, other) => return Err(format!("complete by owner {owner} (slot {slot:?}): unexpected {other:?}")),
        };
        self.owners[owner].known = false;
        Ok(outcome)
    }

    pub(super) fn release(&mut self, owner: usize, answer: &Result<(), StoreError>) -> Result<&'static str, String> {
        self.reach(true, None);
        let key = self.owners[owner].key;
        let holds = matches!(self.keys[key].slot, Slot::Claimed { holder: Holder::Owner(h), .. } if h == owner);
        self.owners[owner].known = false;
        match answer {
            Ok(()) if holds => {
                self.keys[key].slot = Slot::Empty;
                Ok("release: released")
            }
            Err(StoreError::LeaseLost) if !holds => Ok("release: lease lost"),
            other => Err(format!("release by owner {owner}: unexpected {other:?}")),
        }
    }

    pub(super) fn forget(&mut self) {
        for key in 0..KEYS {
            let live = self.live_slot(key);
            let slot = std::mem::replace(&mut self.keys[key].slot, Slot::Empty);
            match slot {
                Slot::Completed { record, .. } if live => self.keys[key].lost = Some(record),
                Slot::Claimed { holder: Holder::Owner(owner), .. } => self.owners[owner].vanished = true,
                _ => {}
            }
        }
        self.quarantine = Quarantine::Pending;
    }
}

pub(super) enum Granted {
    Yes(ClaimToken, u64),
    No,
}
