//! The etcd backend: one key per group in airlock's layout, `com.coreos.airlock/groups/<group>/v1/semaphore`
//! (coreos/airlock internal/lock/lock.go:16, 51), created by a transaction "version = 0 → put" (lock.go:137-142)
//! and changed by read, edit, compare-and-swap (airlock: "version = what was read → put", lock.go:150-181, 197-203;
//! here "mod_revision = what was read", immune to a delete and recreate of the key: [`Stamp`]), so that an airlock
//! server and ade-prep clients can share a group. Spoken over etcd's v3 JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/txn`, keys and values base64; 64-bit numbers as strings), served on the client URL under `/v3/` in etcd
//! 3.4 (etcd v3.4.23 embed/serve.go:298-300; paths: etcdserver/etcdserverpb/gw/rpc.pb.gw.go:851-857).
//!
//! Endpoints are tried in order from the last one that answered: a member that is down or has no leader (a 5xx)
//! passes the request on to the next. A transaction retried on another member after a timeout is safe: the retry
//! reads the key again and finds the id already holding (or released).

use std::cell::Cell;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::semaphore::{Acquire, Semaphore};
use super::{Acquired, Backend, FleetError, Released};

/// How many compare-and-swap races one acquire attempt may lose before it reports busy (its caller polls again).
pub const CAS_ATTEMPTS: u32 = 64;
/// How many a release may lose before it fails: a slot must go back even while a thousand waiters race for the
/// key (bench/fleet.sh lost a release to 64 races in a row with 1000 waiters on a loaded machine).
pub const RELEASE_CAS_ATTEMPTS: u32 = 2000;

/// The group's key (airlock's `keyTemplate` with the group as `url.QueryEscape` leaves a valid group).
pub fn key(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}

/// etcd over its JSON gateway.
pub struct Etcd {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    key: String,
    slots: u64,
    /// The endpoint that answered last.
    first: Cell<usize>,
}

/// A read of the key: the semaphore, and the revision a swap compares against.
struct Read {
    sem: Option<Semaphore>,
    stamp: Stamp,
}

/// Which write of the key a read saw: its `mod_revision` (0: absent). A swap compares it, not the key's version:
/// a version starts again at 1 when the key is deleted and created anew, so "version = 1" can match a key that is
/// no longer the one read (ABA); a revision is never reused (etcd rpc.proto:545, `MOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    mod_revision: i64,
    version: i64,
}

fn number(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Etcd {
    /// A client for `group`'s key; `slots` is what the key is created with when absent.
    pub fn new(agent: ureq::Agent, endpoints: Vec<String>, group: &str, slots: u64) -> Self {
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Etcd { agent, endpoints, key: key(group), slots, first: Cell::new(0) }
    }

    /// POSTs to the gateway, trying each endpoint once.
    fn call(&self, path: &str, body: &Value) -> Result<Value, FleetError> {
        let n = self.endpoints.len();
        let mut why = vec![];
        for k in 0..n {
            let i = (self.first.get() + k) % n;
            let url = format!("{}{path}", self.endpoints[i]);
            match super::http::post(&self.agent, &url, &[], body) {
                Err(e) => why.push(format!("{}: {e}", self.endpoints[i])),
                Ok((status, text)) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status == 200 && v.is_object() {
                        self.first.set(i);
                        return Ok(v);
                    }
                    let msg = v.get("message").and_then(Value::as_str).unwrap_or(text.trim()).to_string();
                    if status >= 500 {
                        // No leader, shutting down, timed out: another member may do.
                        why.push(format!("{}: HTTP {status}: {msg}", self.endpoints[i]));
                        continue;
                    }
                    return Err(FleetError::Server {
                        endpoint: self.endpoints[i].clone(),
                        message: format!("{path}: HTTP {status}: {msg}"),
                    });
                }
            }
        }
        Err(FleetError::Unreachable(why.join("; ")))
    }

    fn read(&self) -> Result<Read, FleetError> {
        let v = self.call("/v3/kv/range", &json!({ "key": B64.encode(&self.key) }))?;
        let Some(kv) = v.get("kvs").and_then(Value::as_array).and_then(|a| a.first()) else {
            return Ok(Read { sem: None, stamp: Stamp { mod_revision: 0, version: 0 } });
        };
        let bad = |message: String| FleetError::BadValue { key: self.key.clone(), message };
        let value = kv.get("value").and_then(Value::as_str).unwrap_or("");
        let bytes = B64.decode(value).map_err(|e| bad(format!("value is not base64: {e}")))?;
        let sem = Semaphore::parse(&bytes).map_err(bad)?;
        Ok(Read {
            sem: Some(sem),
            stamp: Stamp { mod_revision: number(&kv["mod_revision"]), version: number(&kv["version"]) },
        })
    }

    /// The semaphore as stored (None: no key) and the stamp a [`Etcd::swap`] compares against.
    pub fn read_stamped(&self) -> Result<(Option<Semaphore>, Stamp), FleetError> {
        let r = self.read()?;
        Ok((r.sem, r.stamp))
    }

    /// "the key is still the one read → put `sem`"; whether it succeeded. An absent key is created by "version = 0"
    /// (airlock's create, lock.go:137-142); an existing one is changed by "mod_revision = what was read".
    pub fn swap(&self, stamp: &Stamp, sem: &Semaphore) -> Result<bool, FleetError> {
        let k = B64.encode(&self.key);
        debug_assert!((stamp.version == 0) == (stamp.mod_revision == 0), "{stamp:?}");
        let compare = if stamp.mod_revision == 0 {
            json!({ "key": k, "result": "EQUAL", "target": "VERSION", "version": "0" })
        } else {
            json!({ "key": k, "result": "EQUAL", "target": "MOD", "mod_revision": stamp.mod_revision.to_string() })
        };
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": k, "value": B64.encode(sem.to_json()) } }],
        });
        let v = self.call("/v3/kv/txn", &body)?;
        // The gateway leaves out `succeeded` when false (proto3 defaults are not emitted).
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Read, edit, compare-and-swap until the swap holds or the edit changes nothing. `edit` returns whether it
    /// changed the semaphore, and what to report.
    fn edit<T>(
        &self,
        attempts: u32,
        mut edit: impl FnMut(&mut Semaphore) -> (bool, T),
    ) -> Result<Result<T, u32>, FleetError> {
        // A write whose answer was lost (every endpoint failed after it was sent) may have been applied: the next
        // read says what happened; if that read fails too, the error must not claim that nothing changed.
        let mut unsure: Option<String> = None;
        for attempt in 0..attempts {
            let r = match (self.read(), unsure.take()) {
                (Ok(r), _) => r,
                (Err(FleetError::Unreachable(e)), Some(sent)) => {
                    return Err(FleetError::Uncertain(format!("{sent}; then reading the key: {e}")))
                }
                (Err(e), Some(sent)) => {
                    return Err(FleetError::Uncertain(format!("{sent}; then reading the key: {e}")))
                }
                (Err(e), None) => return Err(e),
            };
            if let Some(s) = r.sem.as_ref().filter(|s| attempt == 0 && s.total_slots != self.slots) {
                log::warn!(
                    "etcd {}: the stored semaphore has {} slots, the configuration says {}: the stored number governs",
                    self.key,
                    s.total_slots,
                    self.slots
                );
            }
            // Absent: created empty by the same swap.
            let mut sem = r.sem.unwrap_or_else(|| Semaphore::new(self.slots));
            let (changed, out) = edit(&mut sem);
            if !changed {
                return Ok(Ok(out));
            }
            match self.swap(&r.stamp, &sem) {
                Ok(true) => return Ok(Ok(out)),
                Ok(false) => {}
                Err(FleetError::Unreachable(why)) => {
                    log::warn!("etcd {}: the write's answer was lost ({why}); reading the key again", self.key);
                    unsure = Some(why);
                    continue;
                }
                Err(e) => return Err(e),
            }
            log::debug!("etcd {}: lost a compare-and-swap race (attempt {})", self.key, attempt + 1);
            // Jittered and growing (up to 256 ms), so that racing writers spread out instead of colliding again.
            let nap = super::jitter(&self.key, attempt) % (1u64 << attempt.min(8));
            std::thread::sleep(Duration::from_millis(nap));
        }
        Ok(Err(attempts))
    }
}

impl Backend for Etcd {
    fn acquire(&self, id: &str, now: u64) -> Result<Acquired, FleetError> {
        let r = self.edit(CAS_ATTEMPTS, |sem| match sem.acquire(id, now) {
            Acquire::Taken => (true, Acquired::Taken),
            Acquire::AlreadyHeld => (false, Acquired::AlreadyHeld),
            Acquire::Full => {
                (false, Acquired::Busy(format!("all {} slots are held ({})", sem.total_slots, sem.holders.join(", "))))
            }
        })?;
        Ok(r.unwrap_or_else(|n| Acquired::Busy(format!("lost {n} compare-and-swap races in a row"))))
    }

    fn release(&self, id: &str) -> Result<Released, FleetError> {
        // An absent key holds nobody: nothing is written (a release never creates the group).
        if self.read()?.sem.is_none() {
            return Ok(Released::NotHeld);
        }
        let r = self.edit(RELEASE_CAS_ATTEMPTS, |sem| {
            let removed = sem.release(id);
            (removed, if removed { Released::Released } else { Released::NotHeld })
        })?;
        r.map_err(|n| FleetError::Server {
            endpoint: self.endpoints.join(","),
            message: format!("{}: lost {n} compare-and-swap races in a row; try again", self.key),
        })
    }

    fn status(&self) -> Result<Option<Semaphore>, FleetError> {
        Ok(self.read()?.sem)
    }

    fn describe(&self) -> String {
        format!("etcd {} key {}", self.endpoints.join(","), self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_airlocks() {
        assert_eq!(key("workers"), "com.coreos.airlock/groups/workers/v1/semaphore");
    }

    #[test]
    fn gateway_numbers_are_strings_or_numbers() {
        assert_eq!(number(&json!("42")), 42);
        assert_eq!(number(&json!(7)), 7);
        assert_eq!(number(&Value::Null), 0);
    }

    #[test]
    fn an_unreachable_endpoint_is_a_clear_error() {
        let f = crate::config::Fleet {
            backend: crate::config::FleetBackend::Etcd,
            endpoints: vec!["http://127.0.0.1:1".into()],
            group: "g".into(),
            slots: 1,
            id: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout_secs: 2,
        };
        let e = Etcd::new(super::super::http::agent(&f).unwrap(), f.endpoints.clone(), "g", 1);
        let err = e.acquire("a", 0).unwrap_err().to_string();
        assert!(err.starts_with("no endpoint answered (http://127.0.0.1:1: "), "{err}");
        assert!(err.ends_with("nothing changed"), "{err}");
    }
}
