//! bench/fleet.sh's driver: VMS simulated VMs (one thread each) contend for SLOTS slots of one group on the etcd
//! endpoints given, each as `ade-prep fleet acquire --wait` does (the library's acquire_waiting, a jittered poll),
//! holds its slot HOLD_MS ("the encryption"), and releases it. Prints acquisitions per second, the time to drain and
//! the most holders ever seen, read back from etcd's history of the key (every version of it), and exits 1 if that
//! was ever above SLOTS or a VM got no slot.
//!
//! Usage: fleet_bench ENDPOINTS(comma-separated) [VMS [SLOTS [HOLD_MS [POLL_MS]]]]

use std::time::{Duration, Instant};

use ade_prep::config::{Fleet, FleetBackend};
use ade_prep::fleet::{self, Acquired, Released};
use base64::Engine as _;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).map_or(default, |a| a.parse().expect("a number"))
}

fn range(agent: &ureq::Agent, ep: &str, key: &str, rev: i64) -> Option<(serde_json::Value, i64)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({ "key": b64.encode(key), "revision": rev.to_string() });
    let text =
        agent.post(&format!("{ep}/v3/kv/range")).send(body.to_string()).ok()?.into_body().read_to_string().ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let kv = v.get("kvs")?.as_array()?.first()?.clone();
    let raw = b64.decode(kv["value"].as_str()?).ok()?;
    Some((serde_json::from_slice(&raw).ok()?, kv["mod_revision"].as_str()?.parse().ok()?))
}

fn main() {
    let endpoints: Vec<String> = std::env::args().nth(1).expect("ENDPOINTS").split(',').map(String::from).collect();
    let (vms, slots, hold, poll) = (arg(2, 1000) as usize, arg(3, 10), arg(4, 200), arg(5, 1000));
    let group = format!("bench{}", std::process::id());
    let start = Instant::now();
    let threads: Vec<_> = (0..vms)
        .map(|i| {
            let mut eps = endpoints.clone();
            eps.rotate_left(i % endpoints.len());
            let f = Fleet {
                backend: FleetBackend::Etcd,
                endpoints: eps,
                group: group.clone(),
                slots,
                id: None,
                ca_file: None,
                cert_file: None,
                key_file: None,
                timeout_secs: 30,
            };
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let b = fleet::backend(&f).unwrap();
                    let id = format!("vm-{i:04}");
                    let r = fleet::acquire_waiting(
                        b.as_ref(),
                        &id,
                        Duration::from_secs(1200),
                        Duration::from_millis(poll),
                        |_| {},
                    );
                    if !matches!(r, Ok(Acquired::Taken)) {
                        return Err(format!("{id}: {r:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(hold));
                    match b.release(&id) {
                        Ok(Released::Released) => Ok(()),
                        other => Err(format!("{id}: release: {other:?}")),
                    }
                })
                .unwrap()
        })
        .collect();
    let failed: Vec<String> = threads.into_iter().filter_map(|t| t.join().unwrap().err()).collect();
    let drain = start.elapsed().as_secs_f64();
    // Every version of the key, newest first, back to its creation.
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let key = fleet::etcd::key(&group);
    let (mut most, mut versions) = (0usize, 0usize);
    let mut rev = range(&agent, &endpoints[0], &key, 0).map_or(0, |(_, r)| r);
    while rev > 0 {
        let Some((v, r)) = range(&agent, &endpoints[0], &key, rev) else { break };
        most = most.max(v["holders"].as_array().map_or(0, Vec::len));
        versions += 1;
        rev = r - 1;
    }
    println!("vms {vms}, slots {slots}, hold {hold} ms, poll {poll} ms, {} endpoints", endpoints.len());
    println!("time to drain: {drain:.1} s; acquisitions/s: {:.1}", (vms - failed.len()) as f64 / drain);
    println!("most holders ever seen (etcd history, {versions} versions of the key): {most} (limit {slots})");
    for f in failed.iter().take(5) {
        println!("FAILED {f}");
    }
    if most as u64 > slots || !failed.is_empty() || versions != 2 * vms {
        println!("FAILED: over the limit, a VM without a slot, or versions != 2 x VMs");
        std::process::exit(1);
    }
}
