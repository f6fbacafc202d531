//! The FleetLock backend (coreos/zincati docs/development/fleetlock/protocol.md): `POST <base>/v1/pre-reboot` takes
//! a slot, `POST <base>/v1/steady-state` gives it back (protocol.md:38-39), with the header
//! `fleet-lock-protocol: true` (protocol.md:56) and the body `{"client_params": {"id", "group"}}` (protocol.md:45-47).
//! 200 is success, anything else a failure carrying `{"kind", "value"}` (protocol.md:60, 89-95). The protocol has no
//! status request and does not say whether a 200 was a new slot or one already held.
//!
//! A 4xx is the client's fault (airlock: unknown group, bad identity, internal/server/pre_reboot.go:51-68) and
//! fails; a 5xx (airlock: `failed_lock` when full or on a lost race, pre_reboot.go:82-87) is "not now", retried while
//! waiting, except `failed_sem_init` (airlock cannot reach its etcd, pre_reboot.go:73-79), an error at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Acquired, Backend, FleetError, Released, Semaphore};

/// A FleetLock server.
pub struct FleetLock {
    agent: ureq::Agent,
    base: String,
    group: String,
}

/// How long a release retries a server error (a lost race on airlock's side) before it fails.
pub const RELEASE_RETRY: Duration = Duration::from_secs(60);

/// The `kind` of a FleetLock error body.
fn kind(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("kind").and_then(Value::as_str).map(str::to_string)
}

/// The error a FleetLock server returned, as one line.
fn error_text(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match (v.get("kind").and_then(Value::as_str), v.get("value").and_then(Value::as_str)) {
        (Some(kind), Some(value)) => format!("HTTP {status} {kind}: {value}"),
        _ => format!("HTTP {status}: {}", body.trim().chars().take(200).collect::<String>()),
    }
}

impl FleetLock {
    /// A client of the server at `base` for `group`.
    pub fn new(agent: ureq::Agent, base: String, group: &str) -> Self {
        FleetLock { agent, base: base.trim_end_matches('/').to_string(), group: group.to_string() }
    }

    fn post(&self, path: &str, id: &str) -> Result<(u16, String), FleetError> {
        let body = json!({ "client_params": { "id": id, "group": self.group } });
        let url = format!("{}{path}", self.base);
        // No status request to read back: a request that may have reached the server is not "nothing changed".
        super::http::post(&self.agent, &url, &[("fleet-lock-protocol", "true")], &body).map_err(|e| {
            if e.maybe_sent {
                FleetError::Uncertain(format!("{url}: {e}"))
            } else {
                FleetError::Unreachable(format!("{url}: {e}"))
            }
        })
    }
}

impl Backend for FleetLock {
    fn acquire(&self, id: &str, _now: u64) -> Result<Acquired, FleetError> {
        match self.post("/v1/pre-reboot", id)? {
            (200, _) => Ok(Acquired::Taken),
            // airlock's "cannot reach my etcd" (internal/server/pre_reboot.go:73-79): an error, not a full group.
            (s, body) if s >= 500 && kind(&body).as_deref() != Some("failed_sem_init") => {
                Ok(Acquired::Busy(error_text(s, &body)))
            }
            (s, body) => Err(FleetError::Server {
                endpoint: self.base.clone(),
                message: format!("/v1/pre-reboot: {}", error_text(s, &body)),
            }),
        }
    }

    fn release(&self, id: &str) -> Result<Released, FleetError> {
        // airlock tries its compare-and-swap once and answers a lost race `500 failed_lock` (lock.go:208-209,
        // steady_state.go:82-87): a release retries 5xx, with growing jitter, for up to RELEASE_RETRY.
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            match self.post("/v1/steady-state", id)? {
                (200, _) => return Ok(Released::Done),
                (s, body) if s >= 500 && start.elapsed() < RELEASE_RETRY => {
                    log::debug!("{}/v1/steady-state: {} (attempt {})", self.base, error_text(s, &body), attempt + 1);
                    let nap = super::jitter(id, attempt) % (10u64 << attempt.min(7));
                    std::thread::sleep(Duration::from_millis(nap));
                    attempt = attempt.wrapping_add(1);
                }
                (s, body) => {
                    return Err(FleetError::Server {
                        endpoint: self.base.clone(),
                        message: format!("/v1/steady-state: {}", error_text(s, &body)),
                    })
                }
            }
        }
    }

    fn status(&self) -> Result<Option<Semaphore>, FleetError> {
        Err(FleetError::Unsupported(format!(
            "{}: the FleetLock protocol has no status request; ask the server (airlock: its metrics or etcd key)",
            self.base
        )))
    }

    fn describe(&self) -> String {
        format!("FleetLock server {}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_kind_and_value_or_the_raw_body() {
        assert_eq!(
            error_text(500, r#"{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}"#),
            "HTTP 500 failed_lock: all 1 semaphore slots currently locked"
        );
        assert_eq!(error_text(502, "bad gateway\n"), "HTTP 502: bad gateway");
    }
}
