//! Docker's containers, stopped by prepare and started again by restore through the docker command: what both
//! sides share. It must not decide which containers (the plan does).

use std::time::Duration;

/// How long `docker stop` or `docker start` of `n` containers may take: the grace, a minute, and 5 s a container.
pub(crate) fn docker_timeout(grace_secs: u64, n: usize) -> Duration {
    Duration::from_secs(grace_secs.saturating_add(60).saturating_add(5u64.saturating_mul(n as u64)))
}
