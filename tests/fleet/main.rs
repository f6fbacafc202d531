//! Fleet rollouts against the real engine: Debian's etcd 3.4 (tests/run.sh fetches it into the harness cache) run on
//! loopback with random free ports in temporary data dirs, and a FleetLock server inside these tests
//! (fleetlock_server.rs) over the same etcd. Every etcd is killed when its test ends (Drop, and the parent-death
//! signal should the test process die). One test binary.

#[path = "../common/mod.rs"]
mod common;

mod etcd;
mod fleetlock_server;
mod proxy;
mod tests;
