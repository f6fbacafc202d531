//! The catalogue's Pacemaker entry (docs/workloads.md) with the real Debian 12 packages (pacemaker 2.1.5, corosync
//! 3.1.7) in the `ha` guest (rootfs-ha: rootfs-ns plus pacemaker, pacemaker-cli-utils, corosync), systemd 252: a
//! one-node cluster (the package's corosync.conf: node1 on 127.0.0.1) running an ocf:pacemaker:Dummy resource.
//! `ade-prep prepare` puts the node in standby, waits for the resource to stop, stops pacemaker then corosync;
//! `ade-prep restore` starts them, takes the node out of standby and waits for the cluster: the node is online, the
//! resource started, the probe answers. Asserted with pacemaker's own tools, the CIB on disk and systemd.
//!
//! An sbd.service stand-in (PartOf=corosync.service, RefuseManualStop=yes, required by corosync, as sbd's unit is)
//! goes with corosync and comes back with it: ade-prep does not stop it itself (systemd would refuse).
//!
//! The quorum refusal: a second corosync node (node2, network namespace b) joins node1 (corosync.service, namespace
//! a) in a three-node cluster whose node3 never runs; node1's leave would leave node2 below quorum, and prepare
//! refuses before anything changes.
//!
//! `cluster_in_nspawn` (host side) boots the `ha` guest once and runs this binary's `cluster::in_container_*` tests
//! inside it. It skips (SKIPPED) when rootfs-ha has not been built (`tests/harness/build-guest.sh --nspawn-only`).

use std::time::{Duration, Instant};

use crate::common::{inside, sd, sh, sh_ok as ok, wait_for};
use crate::prepare::{ade, prepare, state, window_open, write_config};

/// How many `in_container_*` tests there are: the host side checks that each ran and passed.
const IN_CONTAINER_TESTS: usize = 2;

#[test]
fn cluster_in_nspawn() {
    let _one = crate::common::one_guest();
    if let Err(e) = crate::common::nspawn_suite_on("cluster", "ha", IN_CONTAINER_TESTS, 600) {
        panic!("{e}");
    }
}

// ---- inside the container ---------------------------------------------------------------------------------

/// The cluster has a DC (each ask bounded: crmadmin waits for an answer while there is none).
fn has_dc() -> bool {
    sh(&["timeout", "5", "crmadmin", "--dc_lookup"]).status.success()
}

fn located() -> String {
    let o = sh(&["crm_resource", "--locate", "--resource", "d1"]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The sbd.service stand-in.
const SBD: &str = "ade-sbd-standin.service";

/// Dummy's state file: it exists while the resource runs (ocf:pacemaker:Dummy, `state` default).
const DUMMY_STATE: &str = "/run/Dummy-d1.state";

#[test]
#[ignore = "runs inside the nspawn container, started by cluster_in_nspawn"]
fn in_container_pacemaker_node_goes_to_standby_stops_and_comes_back_online() {
    if !inside() {
        return;
    }
    let sd = sd();
    let t = Instant::now();
    // A stand-in for sbd.service (not installed: it needs a watchdog), with the dependencies sbd's unit has:
    // PartOf=corosync.service, RefuseManualStop=yes, and corosync requiring it (sbd's RequiredBy=corosync.service).
    std::fs::write(
        format!("/run/systemd/system/{SBD}"),
        "[Unit]\nPartOf=corosync.service\nBefore=pacemaker.service\nRefuseManualStop=yes\n\n\
         [Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    std::fs::create_dir_all("/run/systemd/system/corosync.service.requires").unwrap();
    std::os::unix::fs::symlink(
        format!("/run/systemd/system/{SBD}"),
        format!("/run/systemd/system/corosync.service.requires/{SBD}"),
    )
    .unwrap();
    ok(&["systemctl", "daemon-reload"]);
    ok(&["systemctl", "start", "corosync.service", "pacemaker.service"]);
    assert_eq!(state(&sd, SBD), "active", "corosync pulls the sbd stand-in in");
    assert!(!sh(&["systemctl", "stop", SBD]).status.success(), "RefuseManualStop=yes refuses a stop");
    // A one-node cluster elects itself after dc-deadtime (20 s by default).
    wait_for("a DC", 120, has_dc);
    ok(&["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update", "false"]);
    ok(&[
        "cibadmin",
        "--create",
        "-o",
        "resources",
        "--xml-text",
        "<primitive id=\"d1\" class=\"ocf\" provider=\"pacemaker\" type=\"Dummy\"><operations>\
         <op id=\"d1-monitor\" name=\"monitor\" interval=\"5s\"/></operations></primitive>",
    ]);
    // crm_resource shows a start in progress as running (record-pending): the state file says it is done.
    wait_for("d1 started", 60, || {
        located() == "resource d1 is running on: node1" && std::path::Path::new(DUMMY_STATE).exists()
    });
    println!("MEASURED: pacemaker cluster up with d1 running {:.1}s", t.elapsed().as_secs_f64());
    // corosync and pacemaker's daemons hold their logs on `/` open for writing.
    let quorum = ok(&["corosync-quorumtool", "-s"]);
    assert!(quorum.contains("Quorate:          Yes"), "{quorum}");

    write_config("");
    assert!(!window_open(), "a window is open before the test");
    let t = Instant::now();
    let r = prepare(&[]);
    assert_eq!(r.code, 0, "prepare: {r:?}");
    println!("MEASURED: pacemaker prepare {:.1}s", t.elapsed().as_secs_f64());
    for s in [
        r#"pre-stop pacemaker: running ["crm_attribute", "--type", "nodes", "--name", "standby", "--update", "on"]"#,
        r#"pre-stop pacemaker: running ["crm_resource", "--wait", "--timeout=900s"]"#,
    ] {
        assert!(r.stderr.contains(s), "not run: {s}: {r:?}");
    }
    assert_ne!(state(&sd, "pacemaker.service"), "active", "pacemaker still running in the window");
    assert_ne!(state(&sd, "corosync.service"), "active", "corosync still running in the window");
    // The sbd stand-in went with corosync (ade-prep left it to systemd: an explicit stop is refused).
    assert_ne!(state(&sd, SBD), "active", "the sbd stand-in still running in the window");
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains(&format!("{SBD} refuses a stop of its own (RefuseManualStop=yes)")), "{r:?}");
    assert!(sh(&["pgrep", "-x", "pacemakerd"]).stdout.is_empty(), "pacemakerd left running");
    assert!(!sh(&["corosync-quorumtool", "-s"]).status.success(), "corosync still answers");
    // The node left in standby (recorded in the CIB on disk), its resource stopped before the leave.
    let cib = std::fs::read_to_string("/var/lib/pacemaker/cib/cib.xml").unwrap();
    assert!(cib.contains("name=\"standby\" value=\"on\""), "standby not in the CIB: {cib}");
    assert!(!std::path::Path::new(DUMMY_STATE).exists(), "d1 still running when the node left");
    // Held through the window: a start is refused.
    assert!(!sh(&["systemctl", "start", "pacemaker.service"]).status.success(), "pacemaker started in the window");

    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let r = ade(&["restore", "-v"]);
    assert_eq!(r.code, 0, "restore: {r:?}");
    println!("MEASURED: pacemaker restore {:.1}s", t.elapsed().as_secs_f64());
    assert!(r.stderr.contains("workload pacemaker is ready"), "{r:?}");
    assert_eq!(state(&sd, "corosync.service"), "active");
    assert_eq!(state(&sd, "pacemaker.service"), "active");
    assert_eq!(state(&sd, SBD), "active", "the sbd stand-in came back with corosync");
    // Online: the standby attribute is gone (crm_attribute exits 105, "No such device or address"), the node online,
    // the resource started on it.
    let q = sh(&["crm_attribute", "--type", "nodes", "--name", "standby", "--query"]);
    assert_eq!(q.status.code(), Some(105), "standby still set: {q:?}");
    let mon = ok(&["crm_mon", "-1"]);
    assert!(mon.contains("Online: [ node1 ]"), "{mon}");
    assert_eq!(located(), "resource d1 is running on: node1", "{mon}");
    assert!(std::path::Path::new(DUMMY_STATE).exists(), "{DUMMY_STATE}");
    let s = ade(&["status"]);
    assert_eq!(s.code, 0, "{s:?}");
    assert!(s.stdout.contains("workload pacemaker: ready (probe "), "{s:?}");
    ok(&["systemctl", "stop", "pacemaker.service", "corosync.service"]);
}

/// corosync.conf for three nodes on 10.99.0.1-3 (node3 never runs): with node1 and node2 members the cluster has 2
/// of 3 expected votes, quorum 2; node1's leave would leave node2 alone, below it.
fn three_node_conf(logfile: bool) -> String {
    let mut c = format!(
        "totem {{\n\tversion: 2\n\tcluster_name: adetest\n\tcrypto_cipher: none\n\tcrypto_hash: none\n}}\n\
         logging {{\n\tto_logfile: {}\n\tlogfile: /var/log/corosync/corosync.log\n\tto_syslog: yes\n}}\n\
         quorum {{\n\tprovider: corosync_votequorum\n}}\nnodelist {{\n",
        if logfile { "yes" } else { "no" }
    );
    for i in 1..=3 {
        c += &format!("\tnode {{\n\t\tname: node{i}\n\t\tnodeid: {i}\n\t\tring0_addr: 10.99.0.{i}\n\t}}\n");
    }
    c + "}\n"
}

#[test]
#[ignore = "runs inside the nspawn container, started by cluster_in_nspawn"]
fn in_container_quorum_a_leave_that_would_cost_the_other_member_its_quorum_is_refused_before_anything_changes() {
    if !inside() {
        return;
    }
    let sd = sd();
    // Two corosync nodes in this guest: node1 (corosync.service, network namespace a) and node2 (namespace b, its
    // own /run, /tmp and /var/lib/corosync), over a veth pair. libqb's filesystem sockets let the tools (and
    // ade-prep) reach node1's corosync from the guest's own namespace. NetworkNamespacePath= is systemd 252's (the
    // test's setup only; ade-prep does not use it).
    for cmd in [
        "ip netns add a",
        "ip netns add b",
        "ip -n a link add va type veth peer name vb netns b",
        "ip -n a addr add 10.99.0.1/24 dev va",
        "ip -n b addr add 10.99.0.2/24 dev vb",
        "ip -n a link set lo up",
        "ip -n b link set lo up",
        "ip -n a link set va up",
        "ip -n b link set vb up",
    ] {
        ok(&cmd.split(' ').collect::<Vec<_>>());
    }
    let conf = "/etc/corosync/corosync.conf";
    let original = std::fs::read_to_string(conf).unwrap();
    std::fs::write(conf, three_node_conf(true)).unwrap();
    std::fs::create_dir_all("/root/peer").unwrap();
    std::fs::write("/root/peer/corosync.conf", three_node_conf(false)).unwrap();
    // node2 is another machine's corosync: under its own name, not this node's workload (comm or executable).
    std::fs::copy("/usr/sbin/corosync", "/root/peer/corosync-node2").unwrap();
    std::fs::create_dir_all("/etc/libqb").unwrap();
    std::fs::write("/etc/libqb/force-filesystem-sockets", "").unwrap();
    let dropin = "/run/systemd/system/corosync.service.d/ade-test.conf";
    std::fs::create_dir_all("/run/systemd/system/corosync.service.d").unwrap();
    std::fs::write(dropin, "[Service]\nPrivateTmp=no\nNetworkNamespacePath=/run/netns/a\n").unwrap();
    // Whatever an earlier test left running goes first: the drop-in applies at the next start.
    ok(&["systemctl", "stop", "pacemaker.service", "corosync.service"]);
    ok(&["systemctl", "daemon-reload"]);
    ok(&["systemctl", "start", "corosync.service", "pacemaker.service"]);
    let mut peer = std::process::Command::new("ip")
        .args(["netns", "exec", "b", "unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/lib/corosync && \
             exec /root/peer/corosync-node2 -f -c /root/peer/corosync.conf",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let members = || String::from_utf8_lossy(&sh(&["corosync-quorumtool", "-s"]).stdout).into_owned();
    wait_for("node2 a member", 60, || members().lines().any(|l| l.split_whitespace().eq(["Nodes:", "2"])));
    let q = members();
    assert!(
        q.contains("Expected votes:   3") && q.contains("Quorum:           2") && q.contains("Quorate:          Yes")
    );
    // Pacemaker runs on node1 (node2 has none): without the quorum check the standby and the stops would go ahead.
    wait_for("a DC", 120, has_dc);

    write_config("");
    assert!(!window_open(), "a window is open before the test");
    let r = prepare(&[]);
    assert_eq!(r.code, 3, "prepare must refuse (precondition): {r:?}");
    let line = r.stderr.lines().find(|l| l.contains("prepare refused, nothing was changed")).unwrap_or_default();
    // One line, this refusal alone (node2's corosync is no holder of this node's).
    assert_eq!(
        line,
        "ade-prep: prepare refused, nothing was changed: workload pacemaker: this node's cluster would lose quorum: \
         stopping it would leave the cluster 1 of 3 expected votes, below its quorum of 2: the other members would \
         stop their resources (corosync-quorumtool -s): bring the other members back, or encrypt this node when the \
         cluster can spare it",
        "{r:?}"
    );
    // Nothing changed: no pre-stop ran, both units run, no standby, node2 still has its peer, no window.
    assert!(!r.stderr.contains("pre-stop pacemaker: running"), "{r:?}");
    assert_eq!(state(&sd, "corosync.service"), "active");
    assert_eq!(state(&sd, "pacemaker.service"), "active");
    let standby = sh(&["crm_attribute", "--type", "nodes", "--name", "standby", "--query"]);
    assert_eq!(standby.status.code(), Some(105), "standby set: {standby:?}");
    assert!(members().contains("Total votes:      2"));
    assert!(!window_open());

    let _ = peer.kill();
    let _ = peer.wait();
    ok(&["systemctl", "stop", "pacemaker.service", "corosync.service"]);
    std::fs::remove_file(dropin).unwrap();
    std::fs::write(conf, original).unwrap();
    ok(&["systemctl", "daemon-reload"]);
}
