//! Fuzzing of every parser of outside input (issue 24), on stable Rust: a seeded generator (xorshift) makes
//! arbitrary bytes and mutations of valid samples (bit flips, inserted tokens, cut and repeated ranges, splices of
//! two samples), each parser runs on them under `catch_unwind`, and a finding is a panic or an error whose message
//! is more than one line. Deterministic for a seed: a finding is replayed from its target, seed and index.
//! `cargo test --lib fuzz` runs each target briefly; bench/fuzz.sh runs them for a million inputs each
//! (docs/fuzzing.md). It must not read or change the machine.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// One parser under test: its name, valid samples to mutate, and how to run it on bytes (Err: its error message).
pub struct Target {
    /// Its name, as bench/fuzz.sh takes it.
    pub name: &'static str,
    /// Valid (or nearly valid) inputs, mutated to reach past the first byte.
    pub seeds: &'static [&'static str],
    /// The parser, on arbitrary bytes; Ok when it accepted them, Err(message) when it refused them.
    pub run: fn(&[u8]) -> Result<(), String>,
}

fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn opt<T>(o: Option<T>) -> Result<(), String> {
    o.map(drop).ok_or_else(|| "refused".into())
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "ade-settings",
            seeds: &[
                r#"{"runtimeSettings":[{"handlerSettings":{"protectedSettingsCertThumbprint":"1B","protectedSettings":"MII","publicSettings":{"EncryptionOperation":"EnableEncryption","KeyVaultURL":"https://kv/","VolumeType":"All","SequenceVersion":"3"}}}]}"#,
                r#"{"runtimeSettings":[{"handlerSettings":{"publicSettings":"{\"EncryptionOperation\":\"EnableEncryption\",\"VolumeType\":\"OS\"}"}}]}"#,
            ],
            run: |b| crate::extension::ade::parse_settings(&text(b)).map(drop),
        },
        Target {
            name: "ade-status",
            seeds: &[
                r#"[{"version":"1.0","timestampUTC":"2024-05-01T10:00:00Z","status":{"name":"ADE","operation":"EnableEncryption","status":"success","code":0,"formattedMessage":{"lang":"en-US","message":"Encryption succeeded for all volumes"},"substatus":[{"name":"x","status":"success","code":0,"formattedMessage":{"message":"{\"os\":\"Encrypted\",\"data\":\"NotMounted\"}"}}]}}]"#,
                r#"[{"status":{"status":"transitioning","code":0}}]"#,
            ],
            run: |b| crate::extension::ade::parse_status(&text(b)).map(drop),
        },
        Target {
            name: "config",
            seeds: &[
                "[stray]\npolicy = \"terminate\"\ngrace_secs = 5\n[workloads.db]\nunits = [\"ade-db.service\"]\nstop_timeout_secs = 30\npre_stop = [{ argv = [\"nodetool\", \"drain\"], user = \"root\", timeout_secs = 60 }]\n",
                "[protected]\nunits = [\"x.service\"]\ncomms = [\"vim\"]\n[window]\ntimeout_hours = 24\n[docker]\nstop_grace_secs = 10\n",
            ],
            run: |b| {
                crate::config::parse_text(Path::new("/etc/ade-prep/config.d/fuzz.toml"), &text(b))
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
        Target {
            name: "journal",
            seeds: &[
                include_str!("../tests/fixtures/state/v1.json"),
                include_str!("../tests/fixtures/state/v2.json"),
            ],
            run: |b| {
                crate::window::store::parse(Path::new("/var/lib/ade-prep/state.json.prev"), &text(b))
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
        Target {
            name: "hold-list",
            seeds: &["# held by ade-prep\nmongod.service\ndocker.socket\n", "SAPHN1_00.service\n../x\n"],
            run: |b| {
                let units = crate::window::hold::parse_list(&text(b));
                // Every name it returns is one the generator could mask: a file name, no path.
                match units.iter().find(|u| u.contains('/') || u.contains('\n')) {
                    Some(u) => Err(format!("hold list gave a name that is no unit: {u:?}")),
                    None => Ok(()),
                }
            },
        },
        Target {
            name: "proc-stat",
            seeds: &["4242 (a b) c) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0 18446744073709551615"],
            run: |b| opt(crate::scan::parse_stat(&text(b))),
        },
        Target {
            name: "proc-status",
            seeds: &["Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"],
            run: |b| opt(crate::scan::parse_status_uids(&text(b))),
        },
        Target {
            name: "proc-cgroup",
            seeds: &[
                "0::/system.slice/docker-0a1b.scope\n",
                "11:devices:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n",
            ],
            run: |b| {
                let (unit, _) = crate::scan::unit_from_cgroup(&text(b));
                match unit.filter(|u| u.contains('/')) {
                    Some(u) => Err(format!("a unit name with a slash: {u:?}")),
                    None => Ok(()),
                }
            },
        },
        Target {
            name: "proc-cmdline",
            seeds: &["java\0-Xmx1g\0org.apache.cassandra.service.CassandraDaemon\0"],
            run: |b| {
                let _ = crate::scan::parse_cmdline(b);
                let _ = crate::bundle::redact_argv(&crate::scan::parse_cmdline(b));
                Ok(())
            },
        },
        Target {
            name: "proc-mountinfo",
            seeds: &[
                "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n23 22 0:5 / /dev rw,nosuid - devtmpfs udev rw\n45 22 8:17 / /data\\040x rw - xfs /dev/sdb1 rw\n",
            ],
            run: |b| {
                let _ = crate::mountinfo::parse(&text(b));
                Ok(())
            },
        },
        Target {
            name: "lsblk",
            seeds: &[
                "NAME=\"sda\" KNAME=\"sda\" TYPE=\"disk\" SIZE=\"34359738368\" MAJ:MIN=\"8:0\" MOUNTPOINT=\"\" FSTYPE=\"\" PKNAME=\"\"\nNAME=\"sda1\" KNAME=\"sda1\" TYPE=\"part\" SIZE=\"1073741824\" MAJ:MIN=\"8:1\" MOUNTPOINT=\"/data\\x20x\" FSTYPE=\"ext4\" PKNAME=\"sda\"\n",
            ],
            run: |b| crate::volumes::lsblk::parse(&text(b), "lsblk -P").map(drop),
        },
        Target {
            name: "lock-file",
            seeds: &[r#"{"pid":42,"command":"ade-prep lock -- x","since":1714564700,"child":[43,12345]}"#],
            // As the lock reads it (`read_info`): what is not holder information is ignored, its message never shown.
            run: |b| {
                serde_json::from_str::<crate::lock::HolderInfo>(&text(b))
                    .map(drop)
                    .map_err(|_| "not holder information: ignored".to_string())
            },
        },
    ]
}

/// What a run of one target found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Inputs tried.
    pub tried: u64,
    /// Inputs the parser accepted.
    pub accepted: u64,
    /// Panics and multi-line errors, each as (index, what), the first few only.
    pub findings: Vec<(u64, String)>,
    /// How many findings in all.
    pub found: u64,
}

/// xorshift64*: small, fast, the same sequence for a seed everywhere.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "=",
    "\n",
    "\0",
    "(",
    ")",
    " ",
    "\t",
    "\\",
    "\\u0000",
    "\\x",
    "-1",
    "0",
    "18446744073709551616",
    "99999999999999999999999",
    "1e999",
    "NaN",
    "null",
    "true",
    "[[",
    "]]",
    "\u{feff}",
    "é",
    "\u{202e}",
    "/",
    "..",
    "::",
    "name=systemd",
    "Uid:",
    "MAJ:MIN=\"",
    "\"\"",
    "- ",
    "0::",
    ".service",
    ".slice",
];

/// The input number `i` of a run: random bytes, or a mutated seed.
pub fn input(rng: &mut Rng, seeds: &[&str]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(8) == 0 {
        let n = rng.below(256);
        return (0..n).map(|_| rng.next_u64() as u8).collect();
    }
    let mut v = seeds[rng.below(seeds.len())].as_bytes().to_vec();
    for _ in 0..=rng.below(6) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(len - a + 1)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 && len < 1 << 16 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let chunk = v[a..b].to_vec();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(v.len() + 1);
                    v.splice(at..at, chunk.iter().copied());
                }
            }
            5 => {
                let other = seeds[rng.below(seeds.len())].as_bytes();
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => v.truncate(rng.below(len)),
            _ => {}
        }
    }
    v
}

/// Runs `t` on `n` inputs from `seed`: each must return, and an error must be one line.
pub fn run(t: &Target, n: u64, seed: u64) -> Found {
    let mut rng = Rng::new(seed);
    let mut f = Found::default();
    for i in 0..n {
        let data = input(&mut rng, t.seeds);
        let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&data)));
        f.tried += 1;
        let finding = match r {
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("panic: {what} on {:?}", text(&data)))
            }
            Ok(Err(e)) if e.contains('\n') => Some(format!("a multi-line error {e:?} on {:?}", text(&data))),
            Ok(Err(_)) => None,
            Ok(Ok(())) => {
                f.accepted += 1;
                None
            }
        };
        if let Some(what) = finding {
            f.found += 1;
            if f.findings.len() < 5 {
                f.findings.push((i, what));
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parser_of_outside_input_survives_arbitrary_bytes_with_one_line_errors() {
        // Quiet: a panic is counted as a finding, its message kept in it.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let results: Vec<(&str, Found)> = targets().iter().map(|t| (t.name, run(t, 3000, 24))).collect();
        std::panic::set_hook(hook);
        for (name, f) in &results {
            assert_eq!(f.tried, 3000);
            assert_eq!(f.found, 0, "{name}: {:?}", f.findings);
        }
        // The mutations reach past the first byte: valid seeds survive some of them.
        for (name, f) in &results {
            if !["proc-cmdline", "proc-mountinfo", "hold-list"].contains(name) {
                assert!(f.accepted > 0, "{name}: no input accepted: the seeds or the mutations are wrong");
            }
        }
    }

    #[test]
    fn a_run_is_the_same_for_a_seed() {
        let t = &targets()[0];
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(input(&mut a, t.seeds), input(&mut b, t.seeds));
        }
    }
}
