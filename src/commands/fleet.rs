//! `fleet acquire|release|status`: the group semaphore of a fleet rollout (docs/fleet.md). It owns the verb's
//! output, exit codes and the slot record's writes; the semaphore itself is [`crate::fleet`]'s.

use std::time::Duration;

use anyhow::anyhow;

use super::out;
use crate::config::{Fleet, Settings};
use crate::exit;
use crate::fleet::{self, record, Acquired, Released};
use crate::paths::Paths;

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Take a slot, waiting up to this long.
    Acquire {
        /// Seconds to retry while the group is full (0: one try).
        wait: u64,
    },
    /// Give a slot back.
    Release {
        /// Another VM's slot (an operator freeing a dead holder's).
        force: bool,
    },
    /// Show the group.
    Status {
        /// Print JSON.
        json: bool,
    },
}

/// The options every action shares.
#[derive(Debug, Clone, Default)]
pub struct FleetOpts {
    /// `--group`: instead of fleet.group.
    pub group: Option<String>,
    /// `--id`: instead of this VM's.
    pub id: Option<String>,
}

fn section(settings: &Settings, opts: &FleetOpts) -> anyhow::Result<Fleet> {
    let f = settings.fleet.as_ref().ok_or_else(|| {
        exit::with_code(exit::USAGE, anyhow!("no [fleet] section in the configuration (docs/fleet.md)"))
    })?;
    let f = fleet::with_group(f, opts.group.as_deref());
    if let Err((key, msg)) = crate::config::check_fleet(&f) {
        let key = if opts.group.is_some() && key == "fleet.group" { "--group" } else { key };
        return Err(exit::with_code(exit::USAGE, anyhow!("{key}: {msg}")));
    }
    Ok(f)
}

/// Runs one action; the exit code.
pub fn run(paths: &Paths, settings: &Settings, opts: &FleetOpts, action: &Action) -> anyhow::Result<u8> {
    let f = section(settings, opts)?;
    // This VM's own id, when it can be read (an admin host acting for others may have none).
    let own = fleet::own_id(paths, &f);
    let id = match (&opts.id, &own) {
        (Some(i), _) => i.clone(),
        (None, Ok(i)) => i.clone(),
        (None, Err(e)) => return Err(exit::with_code(exit::FAILED, anyhow!("{e:#}"))),
    };
    let mine = own.as_ref().is_ok_and(|o| *o == id);
    let backend = fleet::backend(&f)?;
    match action {
        Action::Acquire { wait } => {
            if mine {
                super::need_root("fleet acquire (it records the slot on this VM)")?;
                // One slot per VM: a slot recorded in another group is neither overwritten nor stranded.
                if let Some(r) = record::read(paths)?.filter(|r| r.fleet.group != f.group) {
                    return Err(exit::with_code(
                        exit::FAILED,
                        anyhow!(
                            "this VM holds a slot of group {} (recorded {}): `ade-prep fleet release` gives it back \
                             before a slot of group {} is taken",
                            r.fleet.group,
                            crate::clock::format_utc(r.acquired_at),
                            f.group
                        ),
                    ));
                }
            }
            let r = fleet::acquire_waiting(
                backend.as_ref(),
                &id,
                Duration::from_secs(*wait),
                Duration::from_secs(1),
                |why| log::info!("group {} is busy ({why}); waiting", f.group),
            )?;
            match r {
                Acquired::Busy(why) => {
                    Err(exit::with_code(exit::BUSY, anyhow!("no slot in group {} for {id}: {why}", f.group)))
                }
                got => {
                    if mine {
                        let rec = record::SlotRecord {
                            version: record::VERSION,
                            id: id.clone(),
                            acquired_at: crate::clock::now(),
                            fleet: f.clone(),
                            release_pending: false,
                        };
                        if let Err(e) = record::write(paths, &rec) {
                            // Held but not recorded: restore could not give it back; give it back now.
                            let undo = backend.release(&id);
                            return Err(anyhow!(
                                "{e:#}: the slot could not be recorded on this VM, so it was given back ({})",
                                match undo {
                                    Ok(_) => "released".to_string(),
                                    Err(u) => format!("that failed too: {u}; run `ade-prep fleet release`"),
                                }
                            ));
                        }
                    }
                    let how = if got == Acquired::AlreadyHeld { "already held" } else { "acquired" };
                    log::info!("fleet: {how} a slot of group {} for {id} ({})", f.group, backend.describe());
                    let note = if mine { "recorded on this VM" } else { "for another VM: not recorded here" };
                    out(&format!("{how}: group {} slot for {id} ({note})\n", f.group))?;
                    Ok(exit::OK)
                }
            }
        }
        Action::Release { force } => {
            if !mine && !force {
                return Err(exit::with_code(
                    exit::USAGE,
                    anyhow!("--id {id} is not this VM's id: releasing another VM's slot takes --force"),
                ));
            }
            let recorded = if mine {
                super::need_root("fleet release (it removes the slot record on this VM)")?;
                record::read(paths)?.filter(|r| r.id == id)
            } else {
                None
            };
            // This VM's slot is released where the record says (its group, endpoints and TLS files), whatever the
            // configuration says now.
            let (r, group) = match &recorded {
                Some(rec) if opts.group.as_ref().is_some_and(|g| *g != rec.fleet.group) => {
                    return Err(exit::with_code(
                        exit::USAGE,
                        anyhow!(
                            "--group {}: this VM's slot is recorded in group {}; `ade-prep fleet release` without \
                             --group gives it back",
                            f.group,
                            rec.fleet.group
                        ),
                    ))
                }
                Some(rec) => (fleet::release_recorded(paths, rec)?, rec.fleet.group.clone()),
                None => {
                    let r = backend.release(&id)?;
                    if mine {
                        record::remove(paths)?;
                    }
                    (r, f.group.clone())
                }
            };
            log::info!("fleet: released the slot of {id} in group {group} ({r:?})");
            let text = match r {
                Released::Released | Released::Done => format!("released: group {group} slot of {id}\n"),
                Released::NotHeld => format!("not held: {id} holds no slot of group {group}\n"),
            };
            out(&text)?;
            Ok(exit::OK)
        }
        Action::Status { json } => {
            let sem = backend.status()?;
            let local = record::read(paths).unwrap_or_else(|e| {
                log::warn!("{e:#}");
                None
            });
            let exists = sem.is_some();
            if let Some(s) = sem.as_ref().filter(|s| s.total_slots != f.slots) {
                log::warn!(
                    "group {}: the stored semaphore has {} slots, the configuration says {}: the stored number \
                     governs (change it in etcd, as with airlock)",
                    f.group,
                    s.total_slots,
                    f.slots
                );
            }
            // No key yet: what the first acquire will create.
            let sem = sem.unwrap_or_else(|| fleet::Semaphore::new(f.slots));
            if *json {
                let holders: Vec<_> =
                    sem.holders.iter().map(|h| serde_json::json!({ "id": h, "since": sem.since.get(h) })).collect();
                let v = serde_json::json!({
                    "group": f.group,
                    "exists": exists,
                    "where": backend.describe(),
                    "total_slots": sem.total_slots,
                    "free": sem.free(),
                    "holders": holders,
                    "id": id,
                    "this_vm_holds": sem.holds(&id),
                    "recorded": local.as_ref().map(|r| serde_json::json!({"id": r.id, "group": r.fleet.group, "acquired_at": r.acquired_at, "release_pending": r.release_pending})),
                });
                out(&format!("{v:#}\n"))?;
            } else {
                let mut s = if exists {
                    format!(
                        "group {}: {} of {} slots held ({})\n",
                        f.group,
                        sem.holders.len(),
                        sem.total_slots,
                        backend.describe()
                    )
                } else {
                    format!(
                        "group {}: no semaphore yet; the first acquire creates it with {} slots ({})\n",
                        f.group,
                        sem.total_slots,
                        backend.describe()
                    )
                };
                for h in &sem.holders {
                    let since = sem
                        .since
                        .get(h)
                        .map_or("since unknown".into(), |t| format!("since {}", crate::clock::format_utc(*t)));
                    let me = if *h == id { "  (this VM)" } else { "" };
                    s.push_str(&format!("  {h}  {since}{me}\n"));
                }
                match &local {
                    Some(r) if r.release_pending => s.push_str(&format!(
                        "this VM's record: release pending: {} is done but its slot of group {} (since {}) could not \
                         be given back yet; the next restore, run or `ade-prep fleet release` tries again\n",
                        r.id,
                        r.fleet.group,
                        crate::clock::format_utc(r.acquired_at)
                    )),
                    Some(r) => s.push_str(&format!(
                        "this VM's record: {} holds a slot of group {} since {}\n",
                        r.id,
                        r.fleet.group,
                        crate::clock::format_utc(r.acquired_at)
                    )),
                    None => s.push_str("this VM's record: no slot held\n"),
                }
                out(&s)?;
            }
            Ok(exit::OK)
        }
    }
}
