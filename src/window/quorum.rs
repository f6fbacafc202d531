//! Corosync's quorum, read before the plan: stopping corosync on this node takes its votes out of the cluster, and
//! a cluster left below quorum stops every resource it runs (and, with fencing, may fence). Prepare refuses that
//! before anything changes (docs/workloads.md, Pacemaker). A reader of `corosync-quorumtool -s` and a pure verdict.

use std::time::Duration;

use crate::runner::Runner;

/// The unit whose stop takes this node's votes out of the cluster.
pub const COROSYNC_UNIT: &str = "corosync.service";

/// What `corosync-quorumtool -s` says of the cluster, from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// `Quorate: Yes`.
    pub quorate: bool,
    /// `Expected votes:`.
    pub expected_votes: u32,
    /// `Total votes:` (the members' votes, a quorum device's included).
    pub total_votes: u32,
    /// `Quorum:` (the votes needed; 1 with `two_node`).
    pub quorum: u32,
    /// This node's votes (its `(local)` line under "Membership information").
    pub own_votes: u32,
    /// `Flags:` (`Quorate`, `2Node`, `WaitForAll`, `LastManStanding`, `AutoTieBreaker`, `Qdevice`...).
    pub flags: Vec<String>,
}

/// Parses the output of `corosync-quorumtool -s` (corosync 2 and 3; with or without the Qdevice column). Err names
/// the line that is missing.
pub fn parse(out: &str) -> Result<Quorum, String> {
    let field =
        |name: &str| out.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim));
    let number = |name: &str| -> Result<u32, String> {
        let v = field(name).ok_or_else(|| format!("no \"{name}:\" line"))?;
        // `Quorum:           2 Activity blocked`
        v.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("\"{name}: {v}\" is not a number"))
    };
    let quorate = match field("Quorate") {
        Some("Yes") => true,
        Some("No") => false,
        other => return Err(format!("no \"Quorate: Yes|No\" line ({other:?})")),
    };
    // Membership lines: `Nodeid Votes [Qdevice] Name`; this node's name ends with `(local)`.
    let own_votes = out
        .lines()
        .find(|l| l.trim_end().ends_with("(local)"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or("no \"(local)\" membership line with this node's votes")?;
    Ok(Quorum {
        quorate,
        expected_votes: number("Expected votes")?,
        total_votes: number("Total votes")?,
        quorum: number("Quorum")?,
        own_votes,
        flags: field("Flags").unwrap_or_default().split_whitespace().map(str::to_string).collect(),
    })
}

/// Why stopping corosync on this node would leave the rest of the cluster without quorum, or None when it would not.
///
/// - This node is the only member left (its votes are all the votes): no other member loses anything. The whole
///   cluster stops with it (the standby first stops its resources cleanly); a one-node cluster is this case, and so
///   is a node whose peers are all down already.
/// - Other members are there but the cluster is not quorate now: refused (a partition without quorum, which a quorate
///   partition elsewhere may fence).
/// - Otherwise the votes left (`Total votes` less this node's) must reach `Quorum` as corosync computes it now
///   (`two_node` makes it 1). votequorum keeps `expected_votes` when a member leaves unless `last_man_standing` or
///   `auto_tie_breaker` change it later: those are not counted on, so the verdict is on the safe side.
pub fn leave_loses_quorum(q: &Quorum) -> Option<String> {
    let left = q.total_votes.saturating_sub(q.own_votes);
    if left == 0 {
        return None;
    }
    if !q.quorate {
        return Some(format!(
            "the cluster has no quorum now ({} of {} expected votes, quorum {}): its other members may fence this \
             node",
            q.total_votes, q.expected_votes, q.quorum
        ));
    }
    (left < q.quorum).then(|| {
        format!(
            "stopping it would leave the cluster {left} of {} expected votes, below its quorum of {}: the other \
             members would stop their resources",
            q.expected_votes, q.quorum
        )
    })
}

/// Reads the quorum through `corosync-quorumtool -s` as root. The decision comes from its output, never from its exit
/// code, which changed meaning: corosync 3.0.2 and 2.4.6 exit 0 quorate, 2 not quorate, 1 on error (corosync commit
/// db38e395, "quorumtool: Fix exit status codes"); before them (RHEL/CentOS 7's 2.4.x, 2.3.x) `show_status` returned
/// 1 quorate, 0 not quorate, -1 (255) on error. Its output is the same in both (2.3.4, 2.4.5, 3.1.7). So whatever
/// the code, a whole status parses to the quorum; a status that does not parse is an error. Err says why.
pub fn read(runner: &dyn Runner) -> Result<Quorum, String> {
    let argv: Vec<String> = ["corosync-quorumtool", "-s"].iter().map(|s| s.to_string()).collect();
    let o = runner.run(&argv, "root", Duration::from_secs(30)).map_err(|e| format!("corosync-quorumtool -s: {e}"))?;
    if o.timed_out {
        return Err("corosync-quorumtool -s: no answer within 30 s".into());
    }
    parse(&o.stdout).map_err(|e| {
        format!("corosync-quorumtool -s: exited {:?}: {e}: {}{}", o.code, o.stdout.trim(), o.stderr_tail.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Debian 12's corosync 3.1.7 in the `ha` test guest (tests/fixtures/corosync-quorumtool/README).
    fn captured(name: &str) -> Quorum {
        let p = format!("{}/tests/fixtures/corosync-quorumtool/{name}", env!("CARGO_MANIFEST_DIR"));
        parse(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    #[test]
    fn the_real_outputs_parse() {
        let one = captured("one-node.txt");
        assert_eq!(
            one,
            Quorum {
                quorate: true,
                expected_votes: 1,
                total_votes: 1,
                quorum: 1,
                own_votes: 1,
                flags: vec!["Quorate".into()]
            }
        );
        assert_eq!(captured("one-node-qdevice-column.txt"), one, "the Qdevice column (-p) reads the same");
        let wfa = captured("two-node-wait-for-all-peer-absent.txt");
        assert_eq!((wfa.quorate, wfa.expected_votes, wfa.total_votes, wfa.quorum), (false, 2, 1, 1));
        assert_eq!(wfa.flags, ["2Node", "WaitForAll"]);
        let blocked = captured("three-nodes-two-absent.txt");
        assert_eq!((blocked.quorate, blocked.expected_votes, blocked.quorum), (false, 3, 2), "`2 Activity blocked`");
    }

    /// corosync 2.x (RHEL 7) exits 1 when quorate and 0 when not; 3.x exits 0 and 2. Both read by their output.
    #[test]
    fn the_quorum_comes_from_the_output_whatever_the_exit_code() {
        let fixture = |name: &str| {
            let p = format!("{}/tests/fixtures/corosync-quorumtool/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(p).unwrap()
        };
        let read_with = |code: i32, stdout: &str| {
            let mut r = crate::testing::runner::FakeRunner::default();
            r.codes.insert("corosync-quorumtool".into(), code);
            r.stdouts.insert("corosync-quorumtool -s".into(), stdout.into());
            read(&r)
        };
        for (code, file, quorate) in [
            (0, "two-nodes.txt", true),              // 3.x quorate
            (1, "two-nodes.txt", true),              // 2.x quorate
            (2, "two-nodes-peer-absent.txt", false), // 3.x not quorate
            (0, "two-nodes-peer-absent.txt", false), // 2.x not quorate
        ] {
            let q = read_with(code, &fixture(file)).unwrap_or_else(|e| panic!("exit {code}, {file}: {e}"));
            assert_eq!(q.quorate, quorate, "exit {code}, {file}");
        }
        // corosync not answering: no status, an error whatever the code (3.x: 1; 2.x: 255).
        for code in [1, 255] {
            let e = read_with(code, "Cannot initialize QUORUM service\n").unwrap_err();
            assert!(e.starts_with(&format!("corosync-quorumtool -s: exited Some({code}): ")), "{e}");
        }
    }

    #[test]
    fn the_last_member_may_leave_whatever_the_quorum_says() {
        for f in [
            "one-node.txt",
            "two-nodes-peer-absent.txt",
            "two-node-wait-for-all-peer-absent.txt",
            "two-node-peer-absent-quorate.txt",
            "three-nodes-two-absent.txt",
        ] {
            assert_eq!(leave_loses_quorum(&captured(f)), None, "{f}");
        }
    }

    #[test]
    fn a_leave_that_leaves_the_others_below_quorum_is_named() {
        // Three nodes, one down already (captured with two corosync nodes): one vote would stay, quorum 2.
        let why = leave_loses_quorum(&captured("three-nodes-one-absent.txt")).unwrap();
        assert_eq!(
            why,
            "stopping it would leave the cluster 1 of 3 expected votes, below its quorum of 2: the other members \
             would stop their resources"
        );
        // Two nodes without two_node: quorum 2, the peer alone is below it.
        assert!(leave_loses_quorum(&captured("two-nodes.txt")).is_some());
        // Two nodes with two_node: quorum 1, the peer keeps it.
        let two_node = captured("two-nodes-two-node.txt");
        assert_eq!((two_node.quorum, two_node.flags.join(" ").as_str()), (1, "2Node Quorate WaitForAll"));
        assert_eq!(leave_loses_quorum(&two_node), None);
        // Not captured (three members up; peers there but no quorum): the counts as corosync-quorumtool prints them.
        let three_up = Quorum { total_votes: 3, ..captured("three-nodes-one-absent.txt") };
        assert_eq!(leave_loses_quorum(&three_up), None);
        let partition =
            Quorum { quorate: false, expected_votes: 5, quorum: 3, ..captured("three-nodes-one-absent.txt") };
        let why = leave_loses_quorum(&partition).unwrap();
        assert!(why.starts_with("the cluster has no quorum now (2 of 5 expected votes, quorum 3)"), "{why}");
    }

    #[test]
    fn an_output_without_its_lines_is_an_error_naming_the_line() {
        assert_eq!(parse("Cannot initialize CMAP service\n").unwrap_err(), "no \"Quorate: Yes|No\" line (None)");
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/corosync-quorumtool/one-node.txt",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let e = parse(&text.replace("(local)", "")).unwrap_err();
        assert_eq!(e, "no \"(local)\" membership line with this node's votes");
        let e = parse(&text.replace("Total votes:      1", "Total votes:      x")).unwrap_err();
        assert_eq!(e, "\"Total votes: x\" is not a number");
    }
}
