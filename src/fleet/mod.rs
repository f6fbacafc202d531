//! Fleet rollouts: a group semaphore so that no more than N VMs of one service are encrypted at once
//! (docs/fleet.md). A VM takes a slot before ADE is enabled on it, holds it through the encryption and its reboot,
//! and gives it back once `restore` has every workload back. Two backends behind [`Backend`]: etcd v3 directly in
//! airlock's key layout ([`etcd`]), or a FleetLock server ([`fleetlock`]). The held slot is recorded on the VM
//! ([`record`]) so that it survives the reboot. It owns the slot's life; it must not touch the window.

pub mod etcd;
pub mod fleetlock;
pub(crate) mod http;
pub mod record;
pub mod semaphore;

use std::time::{Duration, Instant};

use crate::config::{Fleet, FleetBackend, Settings};
use crate::paths::Paths;
pub use semaphore::Semaphore;

/// A fleet operation that failed; nothing was changed unless the message says so.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No endpoint answered.
    #[error("no endpoint answered ({0}); nothing changed")]
    Unreachable(String),
    /// A write was sent but no answer came back: it may have been applied.
    #[error(
        "no answer to the write ({0}); it may have been applied: acquiring (or releasing) again is safe and tells \
         (etcd: `ade-prep fleet status` shows the group)"
    )]
    Uncertain(String),
    /// The server answered with an error.
    #[error("{endpoint}: {message}")]
    Server {
        /// The URL that answered.
        endpoint: String,
        /// What it said.
        message: String,
    },
    /// The group's key holds something that is not a semaphore.
    #[error("etcd key {key}: {message}")]
    BadValue {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("{path}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The backend cannot do this.
    #[error("{0}")]
    Unsupported(String),
}

/// What one acquire attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// A slot was taken for the id.
    Taken,
    /// The id already held a slot.
    AlreadyHeld,
    /// No slot now (the group is full, or the server refused for now): try again later.
    Busy(String),
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The id held a slot and no longer does.
    Released,
    /// The id held no slot.
    NotHeld,
    /// The server says the id holds no slot now (FleetLock cannot tell whether it held one).
    Done,
}

/// A group semaphore server. One real implementation per backend; tests use the real etcd.
pub trait Backend {
    /// Takes a slot for `id` if one is free (idempotent for a holder). `now`: UTC seconds, for since-when.
    fn acquire(&self, id: &str, now: u64) -> Result<Acquired, FleetError>;
    /// Gives `id`'s slot back (idempotent).
    fn release(&self, id: &str) -> Result<Released, FleetError>;
    /// The group's semaphore as stored.
    fn status(&self) -> Result<Option<Semaphore>, FleetError>;
    /// Where the semaphore lives, for messages.
    fn describe(&self) -> String;
}

/// The backend a `[fleet]` section names.
pub fn backend(f: &Fleet) -> Result<Box<dyn Backend>, FleetError> {
    let agent = http::agent(f)?;
    Ok(match f.backend {
        FleetBackend::Etcd => Box::new(etcd::Etcd::new(agent, f.endpoints.clone(), &f.group, f.slots)),
        FleetBackend::Fleetlock => Box::new(fleetlock::FleetLock::new(agent, f.endpoints[0].clone(), &f.group)),
    })
}

/// The fleet section with `--group` applied.
pub fn with_group(f: &Fleet, group: Option<&str>) -> Fleet {
    let mut f = f.clone();
    if let Some(g) = group {
        f.group = g.to_string();
    }
    f
}

/// Acquire, retrying while busy until `wait` has passed (one try when zero). Errors end it at once: an unreachable
/// server is not waited for (nothing is changed; the operator sees why).
pub fn acquire_waiting(
    b: &dyn Backend,
    id: &str,
    wait: Duration,
    poll: Duration,
    mut on_busy: impl FnMut(&str),
) -> Result<Acquired, FleetError> {
    let start = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let r = b.acquire(id, crate::clock::now())?;
        let Acquired::Busy(why) = &r else { return Ok(r) };
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(r);
        }
        on_busy(why);
        attempt = attempt.wrapping_add(1);
        // Jittered (0.5 to 1.5 times the poll), so that many waiting VMs do not all ask at once.
        let nap = poll.mul_f64(0.5 + (jitter(id, attempt) % 1000) as f64 / 1000.0);
        std::thread::sleep(nap.min(left));
    }
}

/// A cheap per-process pseudo-random number (no rand dependency): the std hasher is randomly keyed.
pub(crate) fn jitter(id: &str, attempt: u32) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((id, attempt, std::process::id()))
}

/// This VM's id: the configured one, else the SMBIOS UUID (lower case), which needs no network.
pub fn own_id(paths: &Paths, f: &Fleet) -> anyhow::Result<String> {
    if let Some(id) = &f.id {
        return Ok(id.clone());
    }
    let p = paths.sys().join("class/dmi/id/product_uuid");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| anyhow::anyhow!("{}: {e} (the VM's id; set fleet.id or run as root)", p.display()))?;
    let id = text.trim().to_ascii_lowercase();
    if id.is_empty() {
        anyhow::bail!("{}: empty (set fleet.id)", p.display());
    }
    Ok(id)
}

/// `restore`'s success path: every workload is back, so the slot this VM holds (if any) is given back. A release
/// that fails keeps the record, marked pending, and says how to finish; restore still succeeded.
pub fn release_after_restore(paths: &Paths) {
    give_back(paths, "every workload is back");
}

/// `run`, when it concludes that ADE's request opens no window on this VM (an online OS encryption, a distribution
/// ADE does not unmount, the OS already encrypted, a data request with nothing to free): ade-prep is done with this
/// VM for the rollout and has nothing to restore, so the recorded slot (if any) goes back. The one call `run` makes.
pub fn release_without_window(paths: &Paths, why: &str) {
    give_back(paths, &format!("no window for ADE's request: {why}"));
}

/// `restore` with no window open: an explicit restore gives the recorded slot back (nothing of ade-prep's is down);
/// the deadline timer's (`past_deadline`) only retries a release left pending, since a slot taken before ADE is
/// enabled has no window yet either.
pub fn release_on_idle_restore(paths: &Paths, past_deadline: bool) {
    match record::read(paths) {
        Ok(Some(r)) if r.release_pending || !past_deadline => {
            give_back(paths, "restore found no window open: every workload is up")
        }
        Ok(_) => {}
        Err(e) => log::error!("{e:#}; the fleet slot (if any) was not released"),
    }
}

/// Gives the recorded slot back (why: for the log). A failure marks the record pending, so that the next restore,
/// `run` or `fleet release` tries again.
pub fn give_back(paths: &Paths, why: &str) {
    let rec = match record::read(paths) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            log::error!("{e:#}; the fleet slot (if any) was not released: `ade-prep fleet release --force` frees it");
            return;
        }
    };
    match release_recorded(paths, &rec) {
        Ok(Released::NotHeld) => log::warn!(
            "fleet: group {} no longer listed {} as a holder (released by force?); record removed",
            rec.fleet.group,
            rec.id
        ),
        Ok(_) => log::info!("fleet: released the slot of {} in group {} ({why})", rec.id, rec.fleet.group),
        Err(e) => {
            let mut pending = rec.clone();
            pending.release_pending = true;
            let marked = match record::write(paths, &pending) {
                Ok(()) => "marked pending: the next restore, run or `ade-prep fleet release` tries again".to_string(),
                Err(w) => format!("{w:#}; run `ade-prep fleet release`"),
            };
            log::error!(
                "fleet: could not release the slot of {} in group {} ({why}): {e:#}; it stays held, {marked}",
                rec.id,
                rec.fleet.group
            )
        }
    }
}

/// Releases what the record says (its own connection settings: the config may have changed or broken since) and
/// removes the record once the server agrees.
pub fn release_recorded(paths: &Paths, rec: &record::SlotRecord) -> anyhow::Result<Released> {
    let b = backend(&rec.fleet)?;
    let r = b.release(&rec.id)?;
    record::remove(paths)?;
    Ok(r)
}

/// `run`, once it has decided to prepare for ADE: ADE will not wait, so `run` does not either; but when this VM is
/// in a fleet and holds no slot, ADE was enabled outside the rollout, which an operator must hear about.
pub fn warn_if_unheld(paths: &Paths, settings: &Settings) {
    let Some(f) = &settings.fleet else { return };
    match record::read(paths) {
        Ok(Some(_)) => {}
        Ok(None) => log::error!(
            "FLEET: this VM holds no slot of group {} and ADE is encrypting it: it was enabled outside the rollout \
             (`ade-prep fleet acquire` first); going ahead, ADE will not wait",
            f.group
        ),
        Err(e) => log::error!("FLEET: {e}; cannot tell whether this VM holds a slot of group {}", f.group),
    }
}
