//! The built packages, on the host: one version everywhere, a binary for glibc 2.17, lintian and rpmlint clean, the
//! .rpm's contents, scriptlets and requirements, and the .rpm installed and erased with `rpm --root`.
//! The packages are built by packaging/build.sh when missing or stale (tests/common/packages.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::packages::{have, packages, Packages};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stdout(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The .deb unpacked into a temp folder.
fn unpacked_deb(p: &Packages) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    stdout(Command::new("dpkg-deb").arg("-x").arg(&p.deb).arg(d.path()));
    d
}

/// The highest `GLIBC_x.y` symbol version named in `text` (objdump -T output, or rpm's requires).
fn highest_glibc(text: &str) -> Option<(u32, u32)> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>());
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
                (Some(Ok(a)), None) => Some((a, 0)),
                _ => None,
            }
        })
        .max()
}

#[test]
fn glibc_versions_are_read_from_objdump_and_rpm_requires() {
    let objdump = "0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.2.5) memcpy\n\
                   0000000000000000      DF *UND*\t0000000000000000 (GLIBC_2.34) __libc_start_main\n\
                   0000000000000000      DF *UND*\t0000000000000000  GLIBC_2.3.4 __chk_fail\n";
    assert_eq!(highest_glibc(objdump), Some((2, 34)));
    assert_eq!(highest_glibc("libc.so.6(GLIBC_2.17)(64bit)\nlibc.so.6(GLIBC_2.9)(64bit)\n"), Some((2, 17)));
    assert_eq!(highest_glibc("GLIBC_PRIVATE\n"), None);
}

#[test]
fn packages_and_the_packaged_binary_carry_the_cargo_version() {
    let Some(p) = packages() else { return };
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(stdout(Command::new("dpkg-deb").arg("-f").arg(&p.deb).arg("Version")).trim(), v);
    assert_eq!(stdout(Command::new("rpm").args(["-qp", "--qf", "%{VERSION}"]).arg(&p.rpm)), v);
    let d = unpacked_deb(&p);
    let out = stdout(Command::new(d.path().join("usr/bin/ade-prep")).arg("--version"));
    assert_eq!(out.trim(), format!("ade-prep {v}"));
}

#[test]
fn packaged_binary_needs_glibc_2_17_at_most() {
    let Some(p) = packages() else { return };
    if !have("objdump") {
        crate::common::skip("objdump (binutils) not installed");
        return;
    }
    let d = unpacked_deb(&p);
    let dynsyms = stdout(Command::new("objdump").arg("-T").arg(d.path().join("usr/bin/ade-prep")));
    let highest = highest_glibc(&dynsyms).expect("no GLIBC_ symbol versions: not a dynamically linked glibc binary?");
    assert!(highest <= (2, 17), "the packaged binary needs GLIBC_{}.{} (CentOS 7 has 2.17)", highest.0, highest.1);
    // rpm computed the same from the binary in the .rpm.
    let requires = stdout(Command::new("rpm").args(["-qp", "--requires"]).arg(&p.rpm));
    let highest_rpm = highest_glibc(&requires).expect("the .rpm requires no GLIBC_ version");
    assert!(highest_rpm <= (2, 17), "the .rpm requires GLIBC_{}.{}:\n{requires}", highest_rpm.0, highest_rpm.1);
    // And the .deb asks for no newer libc6 than that (debian/rules explains why it states it itself).
    let depends = stdout(Command::new("dpkg-deb").arg("-f").arg(&p.deb).arg("Depends"));
    let libc: Vec<_> = depends.split(',').map(str::trim).filter(|d| d.starts_with("libc6")).collect();
    assert_eq!(libc, ["libc6 (>= 2.17)"], "Depends: {depends}");
}

#[test]
fn lintian_is_clean() {
    let Some(p) = packages() else { return };
    if !have("lintian") {
        crate::common::skip("lintian not installed (tests/run.sh installs it)");
        return;
    }
    // An override would live in debian/ade-prep.lintian-overrides, with its reason; there is none.
    let o = run(Command::new("lintian").args(["--fail-on", "error,warning", "--info"]).arg(&p.changes));
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "lintian: {out}");
    assert!(!out.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")), "{out}");
}

#[test]
fn rpmlint_is_clean() {
    let Some(p) = packages() else { return };
    if !have("rpmlint") {
        crate::common::skip("rpmlint not installed (tests/run.sh installs it)");
        return;
    }
    // Settings and filters, each with its reason, live in rpm/rpmlint.toml.
    let config = crate::common::packages::source_dir().join("rpm/rpmlint.toml");
    let o = run(Command::new("rpmlint").arg("-c").arg(&config).arg(&p.rpm));
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "rpmlint: {out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
}

#[test]
fn rpm_contents_scriptlets_and_requirements() {
    let Some(p) = packages() else { return };
    let files = stdout(Command::new("rpm").args(["-qpl"]).arg(&p.rpm));
    for f in [
        "/usr/bin/ade-prep",
        "/usr/lib/systemd/system/ade-prep.service",
        "/usr/lib/systemd/system/ade-prep.path",
        "/usr/lib/systemd/system-generators/ade-prep-generator",
        "/usr/lib/systemd/system-preset/50-ade-prep.preset",
        "/usr/lib/tmpfiles.d/ade-prep.conf",
        "/etc/ade-prep/config.toml",
        "/usr/share/man/man1/ade-prep.1.gz",
        "/usr/share/man/man1/ade-prep-scan.1.gz",
        "/usr/share/bash-completion/completions/ade-prep",
        "/usr/share/zsh/site-functions/_ade-prep",
        "/usr/share/fish/vendor_completions.d/ade-prep.fish",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not in the .rpm:\n{files}");
    }
    let config = stdout(Command::new("rpm").args(["-qpc"]).arg(&p.rpm));
    assert_eq!(config.trim(), "/etc/ade-prep/config.toml", "config files");
    let scripts = stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(&p.rpm));
    for needle in [
        "postinstall scriptlet",
        "systemctl --no-reload preset ade-prep.path",
        "preuninstall scriptlet",
        "refusing to remove ade-prep",
        "postuninstall scriptlet",
        "rm -rf /var/lib/ade-prep /run/ade-prep",
    ] {
        assert!(scripts.contains(needle), "scriptlets lack {needle:?}:\n{scripts}");
    }
    // Every systemctl call that needs a running systemd is guarded by the /run/systemd/system test.
    for l in scripts.lines().filter(|l| l.contains("systemctl daemon-reload") || l.contains("systemctl stop")) {
        assert!(l.contains("[ -d /run/systemd/system ]"), "unguarded: {l}");
    }
    let requires = stdout(Command::new("rpm").args(["-qp", "--requires"]).arg(&p.rpm));
    for r in requires.lines() {
        let ok = [
            "/bin/sh",
            "config(ade-prep)",
            "rtld(GNU_HASH)",
            "rpmlib(",
            "libc.so.6",
            "libgcc_s.so.1",
            "ld-linux-x86-64.so.2",
            // Separate libraries up to glibc 2.33, so linked for 2.17.
            "libdl.so.2",
            "libpthread.so.0",
            // glibc's maths library (the progress display's rates and the report's compression): part of glibc,
            // in every base system; its symbols are held to 2.17 like libc's (packaged_binary_needs_glibc_2_17).
            "libm.so.6",
        ]
        .iter()
        .any(|k| r.starts_with(k));
        assert!(ok, "unexpected requirement {r:?}:\n{requires}");
    }
}

/// Copies `bin` and the libraries it loads (ldd) into `root`.
fn copy_with_libs(bin: &str, root: &Path) {
    let path = stdout(Command::new("sh").args(["-c", &format!("command -v {bin}")])).trim().to_string();
    let real = std::fs::canonicalize(&path).unwrap();
    let mut files: Vec<(PathBuf, PathBuf)> = vec![(real, PathBuf::from(&path))];
    for l in stdout(Command::new("ldd").arg(&path)).lines() {
        let lib = l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from);
        if let Some(lib) = lib {
            files.push((std::fs::canonicalize(&lib).unwrap(), lib));
        }
    }
    for (from, to) in files {
        let dest = root.join(to.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dest).unwrap();
    }
}

fn rpm_root(root: &Path, args: &[&str], pkg: Option<&Path>) -> Output {
    let mut c = Command::new("rpm");
    c.arg("--root").arg(root).args(args);
    if let Some(p) = pkg {
        c.arg(p);
    }
    run(&mut c)
}

fn write_state(root: &Path, phase: &str) {
    let f = root.join("var/lib/ade-prep/state.json");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, format!("{{\n  \"version\": 1,\n  \"phase\": \"{phase}\",\n  \"entries\": []\n}}\n")).unwrap();
}

/// Installs, checks with `before_erase`, refuses to erase while a window is open, erases, checks nothing is left.
fn install_refuse_erase(p: &Packages, root: &Path, before_erase: impl Fn(&Path)) {
    let o = rpm_root(root, &["--initdb"], None);
    assert!(o.status.success(), "rpm --initdb: {}", text(&o));
    let o = rpm_root(root, &["-ivh", "--nodeps"], Some(&p.rpm));
    let out = text(&o);
    assert!(o.status.success(), "rpm -ivh: {out}");
    assert!(!out.contains("scriptlet failed"), "{out}");
    for f in ["usr/bin/ade-prep", "usr/lib/systemd/system/ade-prep.path", "etc/ade-prep/config.toml"] {
        assert!(root.join(f).is_file(), "{f} not installed");
    }
    before_erase(root);
    write_state(root, "open");
    let o = rpm_root(root, &["-e"], Some(Path::new("ade-prep")));
    let out = text(&o);
    assert!(!o.status.success(), "erase with an open window succeeded: {out}");
    assert!(out.contains("refusing to remove ade-prep") && out.contains("is open"), "{out}");
    assert!(root.join("usr/bin/ade-prep").is_file(), "the refused erase removed the binary");
    write_state(root, "closed");
    let o = rpm_root(root, &["-e"], Some(Path::new("ade-prep")));
    let out = text(&o);
    assert!(o.status.success(), "rpm -e: {out}");
    assert!(!out.contains("scriptlet failed"), "{out}");
    for f in ["usr/bin/ade-prep", "usr/lib/systemd/system/ade-prep.path", "etc/ade-prep", "var/lib/ade-prep"] {
        assert!(!root.join(f).exists(), "{f} left behind by rpm -e");
    }
}

#[test]
fn rpm_installs_and_erases_in_a_root_without_systemd() {
    if crate::common::need_root() {
        return;
    }
    let Some(p) = packages() else { return };
    // A merged-/usr root with a shell and the two tools the scriptlets use, and no systemctl or systemd-tmpfiles.
    let d = tempfile::tempdir().unwrap();
    for dir in ["bin", "lib", "lib64", "sbin"] {
        std::fs::create_dir_all(d.path().join("usr").join(dir)).unwrap();
        std::os::unix::fs::symlink(format!("usr/{dir}"), d.path().join(dir)).unwrap();
    }
    for bin in ["sh", "sed", "rm"] {
        copy_with_libs(bin, d.path());
    }
    std::fs::create_dir(d.path().join("dev")).unwrap();
    stdout(Command::new("mknod").arg(d.path().join("dev/null")).args(["c", "1", "3"]));
    install_refuse_erase(&p, d.path(), |root| {
        assert!(!root.join("etc/systemd").exists(), "the scriptlets made systemd state without systemd");
    });
}

#[test]
fn rpm_install_in_a_debian_root_enables_the_path_unit_offline() {
    if crate::common::need_root() {
        return;
    }
    let harness = std::env::var("ADE_HARNESS_DIR").unwrap_or_else(|_| "/var/cache/ade-prep-harness".into());
    let lower = Path::new(&harness).join("rootfs-ns");
    if !lower.join("usr/bin/systemctl").exists() {
        crate::common::skip(&format!("no {} (tests/harness/build-guest.sh --nspawn-only)", lower.display()));
        return;
    }
    let Some(p) = packages() else { return };
    // The harness's Debian root (systemctl present, systemd not running in the chroot), through a throwaway overlay.
    let d = tempfile::tempdir().unwrap();
    let (upper, work, root) = (d.path().join("upper"), d.path().join("work"), d.path().join("root"));
    for x in [&upper, &work, &root] {
        std::fs::create_dir(x).unwrap();
    }
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let o = run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&root));
    assert!(o.status.success(), "mount overlay: {}", text(&o));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    let wants = root.join("etc/systemd/system/paths.target.wants/ade-prep.path");
    install_refuse_erase(&p, &root, |_| {
        let link = std::fs::read_link(&wants).expect("%post did not enable ade-prep.path (preset)");
        // Debian's systemd 252 looks in /lib/systemd/system first (the same file: /lib is /usr/lib there).
        assert!(link.ends_with("systemd/system/ade-prep.path"), "{}", link.display());
    });
    assert!(std::fs::symlink_metadata(&wants).is_err(), "rpm -e left ade-prep.path enabled");
}
