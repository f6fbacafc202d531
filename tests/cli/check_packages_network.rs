//! `ade-prep check`'s packages, network-route, network-proxy and wire-server results as the binary prints them
//! over the fixture trees (tests/fixtures/checks/<case>) and over copies changed case by case. RHEL and CentOS
//! get a real rpm database under the copy, made by this machine's rpm from empty packages rpmbuild makes: the
//! check's `rpm --root ... -q` reads it as it reads a VM's. Nothing here sends a packet.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::check::{ade_prep, assert_shape, check, copy_tree, evidence, fix_of, fixture, result_of};

fn check_root(root: &Path) -> (i32, Value) {
    let out = ade_prep(&["--root", root.to_str().unwrap(), "check", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_shape(&root.display().to_string(), &json);
    (out.status.code().unwrap(), json)
}

/// A copy of fixture `case` under a temporary folder.
fn copy_of(case: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(case);
    copy_tree(&fixture(case), &root);
    // copy_tree copies files and folders only: the interpreters' links are the fixture's, so copy them as links
    for d in ["usr/bin"] {
        let src = fixture(case).join(d);
        let Ok(rd) = std::fs::read_dir(&src) else { continue };
        std::fs::create_dir_all(root.join(d)).unwrap();
        for e in rd.map(Result::unwrap).filter(|e| e.file_type().unwrap().is_symlink()) {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), root.join(d).join(e.file_name()))
                .unwrap();
        }
    }
    (tmp, root)
}

fn one_line(s: &str) {
    assert!(!s.contains('\n'), "more than one line: {s}");
}

#[test]
fn ubuntu_trees_name_missing_packages_and_the_command() {
    let (_, j) = check("ubuntu1604-ade-running");
    assert_eq!(result_of(&j, "packages"), "pass");
    // `python` is Python 2 there: python-parted is ADE's choice (UbuntuPatching.py:112-115)
    assert!(evidence(&j, "packages").contains("python-parted,"), "{}", evidence(&j, "packages"));
    assert!(evidence(&j, "packages").ends_with("the extension runs under Python 2"));
    let (_, j) = check("ubuntu1804-mounts");
    assert_eq!(result_of(&j, "packages"), "warn");
    assert_eq!(
        evidence(&j, "packages"),
        "not installed (dpkg-query -W): at, nvme-cli; the extension runs under Python 3"
    );
    let fix = fix_of(&j, "packages");
    assert!(fix.starts_with("apt-get install -y at nvme-cli ("), "{fix}");
    assert!(fix.contains("`dpkg-query -s {package}` with the braces never filled"), "{fix}");
    // 20.04: python3 although `python` is Python 2 (extension_shim.sh:39)
    let (_, j) = check("ubuntu2004-status-mismatch");
    assert_eq!(result_of(&j, "packages"), "pass");
    assert!(evidence(&j, "packages").contains("python3-parted"), "{}", evidence(&j, "packages"));
    let (_, j) = check("ubuntu2204-encrypted");
    assert_eq!(result_of(&j, "packages"), "pass");
    // online and unsupported distributions: not ADE's unmount lists
    for case in ["ubuntu2310", "rhel86", "sles15"] {
        assert_eq!(result_of(&check(case).1, "packages"), "not-applicable", "{case}");
    }
}

#[test]
fn ubuntu_without_cryptsetup_fails_and_the_table_says_how_to_fix() {
    let (_tmp, root) = copy_of("ubuntu2204-encrypted");
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).unwrap();
    let kept: Vec<&str> = text.split("\n\n").filter(|s| !s.starts_with("Package: cryptsetup-bin\n")).collect();
    assert!(kept.len() < text.split("\n\n").count());
    std::fs::write(&status, kept.join("\n\n")).unwrap();
    let (code, j) = check_root(&root);
    assert_eq!(code, 1);
    assert_eq!(result_of(&j, "packages"), "fail");
    assert!(evidence(&j, "packages").starts_with("not installed (dpkg-query -W): cryptsetup-bin: ADE cannot"));
    let out = ade_prep(&["--root", root.to_str().unwrap(), "check"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("fail") && l.contains(" packages ")), "{table}");
    assert!(table.contains("fix: apt-get install -y cryptsetup-bin ("), "{table}");
    assert!(table.contains("--force packages"), "{table}");
}

#[test]
fn unparsable_package_database_names_file_line_and_field() {
    let (_tmp, root) = copy_of("ubuntu1804-mounts");
    let status = root.join("var/lib/dpkg/status");
    let mut text = std::fs::read_to_string(&status).unwrap();
    let lines = text.lines().count();
    text.push_str("\nPackage: broken\nStatus: install ok\n");
    std::fs::write(&status, text).unwrap();
    let (_, j) = check_root(&root);
    assert_eq!(result_of(&j, "packages"), "unknown");
    // dpkg-query's own message: the file, the line, the package and the field
    let ev = evidence(&j, "packages");
    one_line(ev);
    let want = format!(
        "dpkg-query: error: parsing file '{}' near line {} package 'broken': | third (status) word in 'Status' field",
        status.display(),
        lines + 3
    );
    assert!(ev.starts_with(&want), "{ev}");
}

/// Makes an rpm database under `root` holding empty packages named `names`, with this machine's rpm.
fn rpmdb(root: &Path, names: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("top");
    for n in names {
        let spec = work.path().join(format!("{n}.spec"));
        std::fs::write(
            &spec,
            format!("Name: {n}\nVersion: 1\nRelease: 1\nSummary: f\nLicense: MIT\nBuildArch: noarch\n%description\nf\n%files\n"),
        )
        .unwrap();
        let st = Command::new("rpmbuild")
            .args(["-bb", "--quiet", "--define"])
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec)
            .output()
            .expect("rpmbuild (package rpm) is needed for this test");
        assert!(st.status.success(), "rpmbuild {n}: {}", String::from_utf8_lossy(&st.stderr));
    }
    let rpm = |args: &[&str]| {
        let out = Command::new("rpm")
            .args(["--root", root.to_str().unwrap(), "--dbpath", "/var/lib/rpm"])
            .args(args)
            .output()
            .expect("rpm");
        assert!(out.status.success(), "rpm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    rpm(&["--initdb"]);
    let pkgs: Vec<String> =
        std::fs::read_dir(top.join("RPMS/noarch")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let mut args = vec!["-i", "--justdb", "--nodeps", "--noscripts"];
    args.extend(pkgs.iter().map(String::as_str));
    rpm(&args);
}

const REDHAT7: &[&str] = &["cryptsetup", "lsscsi", "psmisc", "lvm2", "uuid", "at", "patch", "procps-ng", "util-linux"];

#[test]
fn rhel_and_centos_read_a_real_rpm_database() {
    // The static trees have no rpm database: unknown, naming the folder.
    let (_, j) = check("rhel79-rootvg");
    assert_eq!(evidence(&j, "packages"), "no /var/lib/rpm: the package database cannot be read");
    let (_tmp, rhel) = copy_of("rhel79-rootvg");
    rpmdb(&rhel, REDHAT7);
    let (code, j) = check_root(&rhel);
    assert_eq!(code, 0);
    assert_eq!(result_of(&j, "packages"), "pass", "{}", evidence(&j, "packages"));
    assert!(evidence(&j, "packages").contains("all 9 packages"), "{}", evidence(&j, "packages"));
    // CentOS also wants pyparted (centosPatching.py:104); without it and uuid: a warning, yum as the fix
    let (_tmp2, centos) = copy_of("centos72-lvm");
    let some: Vec<&str> = REDHAT7.iter().copied().filter(|n| *n != "uuid").collect();
    rpmdb(&centos, &some);
    let (_, j) = check_root(&centos);
    assert_eq!(result_of(&j, "packages"), "warn", "{}", evidence(&j, "packages"));
    assert_eq!(evidence(&j, "packages"), "not installed (rpm -q --dbpath /var/lib/rpm): uuid, pyparted");
    let fix = fix_of(&j, "packages");
    assert!(fix.starts_with("yum install -y uuid pyparted ("), "{fix}");
    assert!(fix.contains("code 19") && fix.contains("code 52") && fix.contains("code 100"), "{fix}");
}

#[test]
fn the_agents_proxy_and_what_ade_does_with_it() {
    let (_tmp, root) = copy_of("rhel79-rootvg");
    let conf = root.join("etc/waagent.conf");
    let stock = std::fs::read_to_string(&conf).unwrap();
    let (_, j) = check_root(&root);
    assert_eq!(result_of(&j, "network-proxy"), "pass", "{}", evidence(&j, "network-proxy"));
    // under --root the routes are not this machine's: unknown, saying so, and dual pass named as not checked
    assert_eq!(result_of(&j, "network-route"), "unknown");
    assert!(evidence(&j, "network-route").contains("the root is not /"));
    assert!(evidence(&j, "network-route").contains("Entra ID and the Key Vault: not checked"));

    std::fs::write(&conf, format!("{stock}HttpProxy.Host=10.0.0.9\nHttpProxy.Port=3128\n")).unwrap();
    let (code, j) = check_root(&root);
    assert_eq!((code, result_of(&j, "network-proxy")), (0, "warn"));
    assert!(evidence(&j, "network-proxy").contains("ADE sends the wire server call through it"));

    std::fs::write(&conf, format!("{stock}HttpProxy.Host=10.0.0.9\nHttpProxy.Port=31x8\n")).unwrap();
    let (code, j) = check_root(&root);
    assert_eq!((code, result_of(&j, "network-proxy")), (1, "fail"));
    let ev = evidence(&j, "network-proxy");
    one_line(ev);
    assert!(ev.starts_with("/etc/waagent.conf: HttpProxy.Port \"31x8\" is not a port number"), "{ev}");

    let line = stock.lines().count() + 1;
    std::fs::write(&conf, format!("{stock}HttpProxy.Host = 10.0.0.9\n")).unwrap();
    let (_, j) = check_root(&root);
    assert_eq!(result_of(&j, "network-proxy"), "fail");
    assert!(evidence(&j, "network-proxy").starts_with(&format!("/etc/waagent.conf: line {line}:")));

    std::fs::remove_file(&conf).unwrap();
    let (_, j) = check_root(&root);
    assert_eq!(result_of(&j, "network-proxy"), "fail");
    assert!(evidence(&j, "network-proxy").starts_with("no /etc/waagent.conf"));

    // a folder where the file should be: unknown, naming it
    let (_, j) = check("odd-inputs");
    assert_eq!(result_of(&j, "network-proxy"), "unknown");
    assert!(
        evidence(&j, "network-proxy").contains("waagent.conf: Is a directory"),
        "{}",
        evidence(&j, "network-proxy")
    );
}

#[test]
fn environment_proxies_are_listed_as_ignored_by_ade() {
    let (_tmp, root) = copy_of("rhel79-rootvg");
    std::fs::write(root.join("proc/1020/environ"), b"LANG=C\0HTTPS_PROXY=http://10.0.0.9:3128\0").unwrap();
    std::fs::write(root.join("etc/environment"), "no_proxy=169.254.169.254,168.63.129.16\n").unwrap();
    let (code, j) = check_root(&root);
    assert_eq!(code, 0);
    assert_eq!(result_of(&j, "network-proxy"), "info");
    let ev = evidence(&j, "network-proxy");
    assert!(
        ev.ends_with(
            "environment (not read by ADE's HTTP calls): HTTPS_PROXY=http://10.0.0.9:3128 (pid 1020 (python3)), \
             no_proxy=169.254.169.254,168.63.129.16 (/etc/environment)"
        ),
        "{ev}"
    );
}

#[test]
fn wire_server_address_file_as_ade_reads_it() {
    let (_, j) = check("rhel79-rootvg");
    assert_eq!(
        evidence(&j, "wire-server"),
        "/var/lib/waagent/WireServerEndpoint gives 168.63.129.16: ADE posts to 168.63.129.16:80"
    );
    let (_, j) = check("centos72-lvm");
    assert!(evidence(&j, "wire-server").starts_with("no /var/lib/waagent/WireServerEndpoint"));
    let (_tmp, root) = copy_of("rhel79-rootvg");
    let file = root.join("var/lib/waagent/WireServerEndpoint");
    std::fs::write(&file, "not-an-address\n").unwrap();
    let (_, j) = check_root(&root);
    assert_eq!(result_of(&j, "wire-server"), "warn");
    assert!(evidence(&j, "wire-server").contains("ADE ignores it"));
    std::fs::write(&file, "168.63.129.316\n").unwrap();
    let (code, j) = check_root(&root);
    assert_eq!((code, result_of(&j, "wire-server")), (1, "fail"));
    one_line(evidence(&j, "wire-server"));
    assert!(evidence(&j, "wire-server").contains("\"168.63.129.316\" passes ADE's test but is no address"));
}

/// `ade-prep check --json` on this machine, in a fresh network and mount namespace: /var/lib is a private tmpfs
/// holding a WALinuxAgent-* folder (so the guest agent counts as installed), `setup` runs first. Root only.
fn check_in_fresh_netns(setup: &str) -> Value {
    let script = format!(
        "mount -t tmpfs tmpfs /var/lib; mkdir -p /var/lib/waagent/WALinuxAgent-2.9.1.1; {setup} exec {} check --json",
        crate::bin()
    );
    let out = Command::new("unshare").args(["--mount", "--net", "sh", "-ec", &script]).output().expect("unshare");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn routes_come_from_this_kernel_without_a_packet_sent() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED routes_come_from_this_kernel_without_a_packet_sent: needs root (unshare)");
        return;
    }
    // Only a loopback: no route to IMDS nor to the wire server.
    let j = check_in_fresh_netns("");
    assert_shape("fresh netns", &j);
    assert_eq!(result_of(&j, "network-route"), "fail", "{}", evidence(&j, "network-route"));
    let ev = evidence(&j, "network-route");
    assert!(ev.starts_with("IMDS 169.254.169.254: no route (Network is unreachable"), "{ev}");
    assert!(ev.contains("wire server 168.63.129.16: no route"), "{ev}");
    assert!(ev.ends_with("Entra ID and the Key Vault: not checked"), "{ev}");
    // A veth pair with a default route through a gateway that does not exist: found, and nothing is sent to it.
    let j = check_in_fresh_netns(
        "ip link add ade0 type veth peer name ade1; ip link set ade0 up; ip link set ade1 up; \
         ip addr add 10.9.0.1/24 dev ade0; ip route add default via 10.9.0.2 dev ade0;",
    );
    assert_eq!(result_of(&j, "network-route"), "pass", "{}", evidence(&j, "network-route"));
    assert!(
        evidence(&j, "network-route").starts_with(
            "IMDS 169.254.169.254: via 10.9.0.2 dev ade0 src 10.9.0.1; wire server 168.63.129.16: via 10.9.0.2 dev ade0"
        ),
        "{}",
        evidence(&j, "network-route")
    );
}
