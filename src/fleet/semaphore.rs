//! The group semaphore as airlock stores it (coreos/airlock internal/lock/semaphore.go:16-19): `{"total_slots": N,
//! "holders": [ids]}`, holders kept sorted. Pure edits only: the backends read it, edit it here, and write it back
//! with a compare-and-swap. ade-prep adds one optional field, `ade_prep_since` (holder → when it took its slot, UTC
//! seconds), for `fleet status`; airlock's reader ignores unknown fields (Go's encoding/json, lock.go:174-178) and
//! drops it when it rewrites the key, which only loses the since-when.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One group's semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// How many holders the group allows at once.
    pub total_slots: u64,
    /// Who holds a slot, sorted (airlock's order, so both writers produce the same value).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub holders: Vec<String>,
    /// When each holder took its slot (UTC seconds), where ade-prep took it.
    #[serde(default, rename = "ade_prep_since", skip_serializing_if = "BTreeMap::is_empty")]
    pub since: BTreeMap<String, u64>,
}

/// A Go nil slice is written as `null`: read it as no holders.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// What an acquire did to the semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The id was added.
    Taken,
    /// The id already held a slot (recursive lock: airlock semaphore.go:33-37); nothing changed.
    AlreadyHeld,
    /// Every slot is taken by others; nothing changed.
    Full,
}

impl Semaphore {
    /// An empty semaphore of `slots` slots (what airlock's ensureInit writes, lock.go:131).
    pub fn new(slots: u64) -> Self {
        Semaphore { total_slots: slots, holders: vec![], since: BTreeMap::new() }
    }

    /// Parses the key's value.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Err("empty semaphore value".into());
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not a semaphore ({{\"total_slots\",\"holders\"}}): {e}"))
    }

    /// The value to store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("a semaphore always serialises: {e}"))
    }

    /// Whether `id` holds a slot.
    pub fn holds(&self, id: &str) -> bool {
        self.holders.iter().any(|h| h == id)
    }

    /// Adds `id` as a holder when a slot is free; idempotent for a holder.
    pub fn acquire(&mut self, id: &str, now: u64) -> Acquire {
        if self.holds(id) {
            return Acquire::AlreadyHeld;
        }
        // `>=`: a key written by hand with more holders than slots (slots lowered) admits nobody new.
        if self.holders.len() as u64 >= self.total_slots {
            return Acquire::Full;
        }
        // Sorted before every write: airlock finds holders by binary search (semaphore.go:34, 101), so a list
        // written out of order by hand would hide a holder from it.
        self.holders.sort();
        let at = self.holders.binary_search_by(|h| h.as_str().cmp(id)).unwrap_or_else(|i| i);
        self.holders.insert(at, id.to_string());
        self.since.insert(id.to_string(), now);
        self.prune();
        Acquire::Taken
    }

    /// Removes `id`; false when it held no slot (nothing changed).
    pub fn release(&mut self, id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h != id);
        let removed = self.holders.len() != before;
        self.holders.sort();
        self.since.remove(id);
        self.prune();
        removed
    }

    /// Since-when entries of ids that no longer hold (another writer released them) are dropped.
    fn prune(&mut self) {
        let holders = &self.holders;
        self.since.retain(|k, _| holders.iter().any(|h| h == k));
    }

    /// Free slots (0 when over-full).
    pub fn free(&self) -> u64 {
        self.total_slots.saturating_sub(self.holders.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_fills_the_slots_in_sorted_order_then_refuses() {
        let mut s = Semaphore::new(2);
        assert_eq!(s.acquire("vm-b", 10), Acquire::Taken);
        assert_eq!(s.acquire("vm-a", 11), Acquire::Taken);
        assert_eq!(s.holders, ["vm-a", "vm-b"]);
        assert_eq!(s.acquire("vm-c", 12), Acquire::Full);
        assert_eq!(s.holders, ["vm-a", "vm-b"]);
        assert_eq!(s.free(), 0);
    }

    #[test]
    fn re_acquire_by_a_holder_changes_nothing_even_when_full() {
        let mut s = Semaphore::new(1);
        assert_eq!(s.acquire("vm-a", 10), Acquire::Taken);
        let before = s.clone();
        assert_eq!(s.acquire("vm-a", 99), Acquire::AlreadyHeld);
        assert_eq!(s, before, "the since-when of the first acquire is kept");
    }

    #[test]
    fn holders_written_out_of_order_by_hand_are_sorted_by_every_write() {
        let mut s = Semaphore::parse(br#"{"total_slots":5,"holders":["vm-c","vm-a"]}"#).unwrap();
        assert_eq!(s.acquire("vm-b", 1), Acquire::Taken);
        assert_eq!(s.holders, ["vm-a", "vm-b", "vm-c"]);
        let mut s = Semaphore::parse(br#"{"total_slots":5,"holders":["vm-d","vm-c","vm-a"]}"#).unwrap();
        assert!(s.release("vm-c"));
        assert_eq!(s.holders, ["vm-a", "vm-d"]);
    }

    #[test]
    fn release_frees_the_slot_and_is_idempotent() {
        let mut s = Semaphore::new(1);
        s.acquire("vm-a", 10);
        assert!(s.release("vm-a"));
        assert!(!s.release("vm-a"));
        assert!(s.holders.is_empty() && s.since.is_empty());
        assert_eq!(s.acquire("vm-b", 11), Acquire::Taken);
    }

    #[test]
    fn a_hand_written_over_full_key_admits_nobody_new() {
        let mut s = Semaphore::parse(br#"{"total_slots":1,"holders":["x","y"]}"#).unwrap();
        assert_eq!(s.acquire("z", 1), Acquire::Full);
        assert_eq!(s.acquire("x", 1), Acquire::AlreadyHeld);
        assert_eq!(s.free(), 0);
    }

    #[test]
    fn airlocks_value_parses_and_ours_keeps_its_two_fields() {
        // What airlock's String() writes for an empty semaphore of 3 slots (semaphore.go:22-24, 66).
        let s = Semaphore::parse(br#"{"total_slots":3,"holders":[]}"#).unwrap();
        assert_eq!(s, Semaphore::new(3));
        assert_eq!(s.to_json(), r#"{"total_slots":3,"holders":[]}"#);
        let mut s = s;
        s.acquire("a", 5);
        assert_eq!(s.to_json(), r#"{"total_slots":3,"holders":["a"],"ade_prep_since":{"a":5}}"#);
        // airlock's `null` holders (a Go nil slice) read as none.
        assert!(Semaphore::parse(br#"{"total_slots":3,"holders":null}"#).unwrap().holders.is_empty());
        assert!(Semaphore::parse(br#"{"total_slots":3}"#).unwrap().holders.is_empty());
    }

    #[test]
    fn since_entries_of_holders_removed_by_another_writer_are_dropped() {
        let mut s = Semaphore::parse(br#"{"total_slots":3,"holders":["b"],"ade_prep_since":{"a":1,"b":2}}"#).unwrap();
        s.acquire("c", 3);
        assert_eq!(s.since.keys().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn garbage_is_an_error_naming_the_shape() {
        assert!(Semaphore::parse(b"").unwrap_err().contains("empty"));
        assert!(Semaphore::parse(b"\"x\"").unwrap_err().contains("total_slots"));
        assert!(Semaphore::parse(br#"{"holders":[]}"#).unwrap_err().contains("missing field `total_slots`"));
    }
}
