//! The network paths ADE's extension (1.4.0.12) uses from the VM, judged without sending a packet: a route to
//! IMDS and to the wire server (or to the proxy the wire server call goes through), the proxy settings and what
//! ADE does with each, and the wire server address file. Single pass talks only to those two; dual pass also
//! talks to Entra ID and the Key Vault, which are not checked. It owns the three checks, ADE's reading of
//! /etc/waagent.conf and of the address file, and [`gather`]; it must not open a connection, resolve a name or
//! send anything (routes come from the kernel's tables through [`RouteLookup`]).

use std::net::Ipv4Addr;

use crate::netlink::{LookupError, Netlink, Route, RouteLookup};
// WAAGENT_CONF: ADE's own copy of the old agent parses it at import (Utils/HandlerUtil.py:75).
use crate::paths::{Paths, ETC_ENVIRONMENT, WAAGENT_CONF};

use crate::fsread::read_optional;
use crate::procs::Process;

use super::{Check, Input, Status, NETWORK_PROXY, NETWORK_ROUTE, WIRE_SERVER};

/// The wire server address the agent found over DHCP (Common.py:88).
pub const WIRE_SERVER_FILE: &str = "/var/lib/waagent/WireServerEndpoint";
/// IMDS (Common.py:69).
pub const IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The wire server's fixed address (Common.py:87).
pub const WIRE_SERVER_IP: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

const PROXY_VARS: &[&str] =
    &["http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];
const DUAL_PASS: &str = "dual pass also reaches Entra ID and the Key Vault: not checked";
const NO_AGENT: &str = "the guest agent is not installed (no waagent program, WALinuxAgent-* folder or agent \
    process): ADE runs only as its extension";
/// Where the agent's program is installed by the distributions' packages.
const WAAGENT_PROGRAMS: &[&str] = &["/usr/sbin/waagent", "/usr/bin/waagent"];

/// A proxy variable and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyVar {
    /// `/etc/environment`, `pid 812 (waagent)`, `ade-prep`.
    pub source: String,
    /// The variable.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A destination whose route was looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// What ADE talks to there ("IMDS", "wire server", "proxy for the wire server").
    pub what: String,
    /// The address (None: a name, not resolved).
    pub addr: Option<Ipv4Addr>,
    /// The kernel's answer.
    pub route: Result<Route, LookupError>,
}

/// What the network checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFacts {
    /// What shows the guest agent installed (None: nothing does, and ADE, which runs only as the agent's
    /// extension, has no network path to judge).
    pub agent: Option<String>,
    /// [`WAAGENT_CONF`] (None: absent).
    pub waagent_conf: Input<Option<String>>,
    /// [`WIRE_SERVER_FILE`] (None: absent).
    pub wire_file: Input<Option<String>>,
    /// Proxy variables of the agent's processes, of ade-prep (on the running system) and of /etc/environment;
    /// the errors of sources that could not be read.
    pub proxy_vars: Vec<Result<ProxyVar, String>>,
    /// The routes (Err: not looked up, and why).
    pub routes: Input<Vec<Lookup>>,
}

/// HttpProxy.Host and HttpProxy.Port as ADE reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentProxy {
    /// HttpProxy.Host (None when absent or "None").
    pub host: Option<String>,
    /// HttpProxy.Port, as text.
    pub port: Option<String>,
}

impl AgentProxy {
    /// ADE goes through the proxy only when both are set (HttpUtil.py:61).
    pub fn in_use(&self) -> bool {
        self.host.is_some() && self.port.is_some()
    }
}

/// Reads waagent.conf the way ADE's copy of the agent does (Utils/waagent:3497-3508): a line not starting with
/// `#` and holding `=` is `key=value` in its first word, quotes and blanks trimmed, "None" meaning unset, the
/// last line winning. A line that parser fails on (an `=` after the first word) is an error naming it, since
/// the extension then fails at import.
pub fn parse_waagent_conf(text: &str) -> Result<AgentProxy, String> {
    let mut p = AgentProxy::default();
    for (i, line) in text.split('\n').enumerate() {
        if line.starts_with('#') || !line.contains('=') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let Some(value) = first.split('=').nth(1) else {
            return Err(format!("line {}: {:?}: no `=` in its first word", i + 1, line.trim()));
        };
        let value = value.trim_matches(|c| c == '"' || c == ' ');
        let value = (value != "None").then(|| value.to_string());
        match first.split('=').next() {
            Some("HttpProxy.Host") => p.host = value,
            Some("HttpProxy.Port") => p.port = value,
            _ => {}
        }
    }
    Ok(p)
}

/// The wire server address ADE uses and why (EncryptionSettingsUtil.py:356-378): the file's first line when
/// it starts like a dotted quad, else the fixed address. Err when ADE would use a line that is no address.
pub fn wire_address(file: &Option<String>) -> Result<(Ipv4Addr, String), String> {
    let Some(text) = file else {
        return Ok((WIRE_SERVER_IP, format!("no {WIRE_SERVER_FILE}, so the fixed address")));
    };
    let line = text.split('\n').next().unwrap_or("").trim();
    // ADE's test: re.match(r'\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}', ...), anchored at the start only.
    let quad = line.split('.').take(4).collect::<Vec<_>>();
    let starts_like_quad = quad.len() == 4
        && quad[..3].iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && quad[3].bytes().take_while(u8::is_ascii_digit).count() >= 1;
    if !starts_like_quad {
        return Ok((
            WIRE_SERVER_IP,
            format!("{WIRE_SERVER_FILE} holds {line:?}, not an address: ADE ignores it and uses the fixed address"),
        ));
    }
    match line.parse::<Ipv4Addr>() {
        Ok(a) => Ok((a, format!("{WIRE_SERVER_FILE} gives {a}"))),
        Err(_) => Err(format!(
            "{WIRE_SERVER_FILE}: {line:?} passes ADE's test but is no address: ADE posts to http://{line}:80/ and fails"
        )),
    }
}

/// The destinations to look up: IMDS always directly (noProxy, IMDSUtil.py:75-80); the wire server, or the
/// proxy its call goes through when the agent's HttpProxy is set (HttpUtil.py:61-82). A proxy given by name is
/// not resolved (that would send a DNS query): Err says so.
pub fn destinations(conf: &Option<AgentProxy>, wire: Option<Ipv4Addr>) -> Vec<(String, Result<Ipv4Addr, String>)> {
    let mut out = vec![("IMDS".to_string(), Ok(IMDS))];
    match conf.as_ref().filter(|p| p.in_use()) {
        Some(p) => {
            let host = p.host.clone().unwrap_or_default();
            let addr = host
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("the proxy {host} is a name: not resolved, since that would send a DNS query"));
            out.push((format!("proxy for the wire server ({host})"), addr));
        }
        None => out.push((
            "wire server".to_string(),
            wire.ok_or_else(|| "the wire server address is not known (see wire-server)".to_string()),
        )),
    }
    out
}

/// The route check.
pub fn route(facts: &NetFacts) -> Check {
    const TITLE: &str = "routes to IMDS and the wire server";
    const FIX: &str = "ADE needs a route from the VM to IMDS (169.254.169.254, direct) and to the wire server \
        (168.63.129.16:80, or the address in /var/lib/waagent/WireServerEndpoint; through the agent's HttpProxy when \
        set): restore the default route or add host routes (`ip route get 169.254.169.254` shows the choice), and \
        keep user-defined routes and firewalls from diverting them. Dual pass also needs Entra ID and the Key Vault.";
    let mk = |r, e: String| Check { id: NETWORK_ROUTE, title: TITLE, result: r, evidence: e, fix: FIX.into() };
    if facts.agent.is_none() {
        return mk(Status::NotApplicable, NO_AGENT.into());
    }
    let lookups = match &facts.routes {
        Ok(l) => l,
        Err(e) => return mk(Status::Unknown, format!("{e}; {DUAL_PASS}")),
    };
    let (mut bad, mut unknown, mut parts) = (false, false, vec![]);
    for l in lookups {
        let said = match &l.route {
            Ok(r) if r.usable() => r.describe(),
            Ok(r) => {
                bad = true;
                format!("{}: no way out", r.describe())
            }
            Err(LookupError::NoRoute(e)) => {
                bad = true;
                format!("no route ({e})")
            }
            Err(e @ LookupError::Failed(_)) => {
                unknown = true;
                e.to_string()
            }
        };
        parts.push(match l.addr {
            Some(a) => format!("{} {a}: {said}", l.what),
            None => format!("{}: {said}", l.what),
        });
    }
    let evidence = format!("{}; {DUAL_PASS}", parts.join("; "));
    mk(
        if bad {
            Status::Fail
        } else if unknown {
            Status::Unknown
        } else {
            Status::Pass
        },
        evidence,
    )
}

/// The proxy check: the agent's HttpProxy (which ADE uses) and the environment's variables (which it does not).
pub fn proxy(facts: &NetFacts) -> Check {
    const TITLE: &str = "proxy settings on ADE's paths";
    const FIX: &str = "/etc/waagent.conf must exist and parse (`key=value`, no blanks around `=`, with a valid \
        HttpProxy.Port when HttpProxy.Host is set): ADE's copy of the agent reads it when the extension starts \
        (Utils/HandlerUtil.py:75, Utils/waagentloader.py:37). IMDS is always called directly. The wire server call \
        goes through the agent's proxy only when both HttpProxy.Host and HttpProxy.Port are set, and then over TLS \
        with a CONNECT to the wire server's port 80 (HttpUtil.py:61-82): unset them, or make sure the proxy speaks \
        TLS and lets CONNECT to the wire server through. Proxy variables in the environment are not read by ADE's \
        HTTP calls (Python's http.client, HttpUtil.py:57-83); apt-get and yum, which ADE runs to install packages, \
        do read them.";
    let mk = |r, e: String| Check { id: NETWORK_PROXY, title: TITLE, result: r, evidence: e, fix: FIX.into() };
    if facts.agent.is_none() {
        return mk(Status::NotApplicable, NO_AGENT.into());
    }
    let vars: Vec<String> = facts
        .proxy_vars
        .iter()
        .map(|v| match v {
            Ok(v) => format!("{}={} ({})", v.name, v.value, v.source),
            Err(e) => format!("not read: {e}"),
        })
        .collect();
    let env = if vars.is_empty() {
        "no proxy variable in the agent's, ade-prep's or /etc/environment's environment".to_string()
    } else {
        format!("environment (not read by ADE's HTTP calls): {}", vars.join(", "))
    };
    let conf = match &facts.waagent_conf {
        Err(e) => return mk(Status::Unknown, format!("{e}; {env}")),
        Ok(None) => {
            return mk(
                Status::Fail,
                format!(
                    "no {WAAGENT_CONF}: ADE's copy of the agent raises \"Missing configuration\" when the \
                    extension starts (Utils/waagent:3495-3496); {env}"
                ),
            )
        }
        Ok(Some(t)) => match parse_waagent_conf(t) {
            Ok(c) => c,
            Err(e) => {
                return mk(
                    Status::Fail,
                    format!(
                        "{WAAGENT_CONF}: {e}: ADE's parser of it fails when the extension starts \
                        (Utils/waagent:3497-3508); {env}"
                    ),
                )
            }
        },
    };
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|n| n > 0);
    match (&conf.host, &conf.port) {
        (Some(h), Some(p)) if !port_ok(p) => mk(
            Status::Fail,
            format!(
                "{WAAGENT_CONF}: HttpProxy.Port {p:?} is not a port number: ADE's wire server call through the \
                proxy {h} cannot connect; {env}"
            ),
        ),
        (Some(h), Some(p)) => mk(
            Status::Warn,
            format!(
                "{WAAGENT_CONF}: HttpProxy.Host={h} HttpProxy.Port={p}: ADE sends the wire server call through \
                it, over TLS with a CONNECT; IMDS goes direct; {env}"
            ),
        ),
        (h, p) => {
            let half = match (h, p) {
                (Some(h), None) => format!("HttpProxy.Host={h} without HttpProxy.Port: ignored by ADE; "),
                (None, Some(p)) => format!("HttpProxy.Port={p} without HttpProxy.Host: ignored by ADE; "),
                _ => String::new(),
            };
            let evidence = format!(
                "{half}no proxy for ADE in {WAAGENT_CONF}: IMDS and the wire server are called \
                directly; {env}"
            );
            mk(if vars.is_empty() { Status::Pass } else { Status::Info }, evidence)
        }
    }
}

/// The wire server address file check.
pub fn wire_server(facts: &NetFacts) -> Check {
    const TITLE: &str = "wire server address";
    const FIX: &str = "ADE posts its encryption settings to the address on the first line of \
        /var/lib/waagent/WireServerEndpoint, else to 168.63.129.16 (EncryptionSettingsUtil.py:356-378). Let the guest \
        agent rewrite the file (restart it: `systemctl restart walinuxagent` or `waagent`), or remove a file that \
        holds no address.";
    let mk = |r, e: String| Check { id: WIRE_SERVER, title: TITLE, result: r, evidence: e, fix: FIX.into() };
    if facts.agent.is_none() {
        return mk(Status::NotApplicable, NO_AGENT.into());
    }
    match &facts.wire_file {
        Err(e) => mk(Status::Unknown, e.clone()),
        Ok(f) => match wire_address(f) {
            Err(e) => mk(Status::Fail, e),
            Ok((a, why)) if f.is_some() && why.contains("ignores") => mk(Status::Warn, format!("{why} ({a})")),
            Ok((a, why)) if a != WIRE_SERVER_IP => {
                mk(Status::Pass, format!("{why}, not the usual {WIRE_SERVER_IP}: ADE posts to {a}:80"))
            }
            Ok((a, why)) => mk(Status::Pass, format!("{why}: ADE posts to {a}:80")),
        },
    }
}

fn proxy_vars_of(source: &str, pairs: impl Iterator<Item = (String, String)>) -> Vec<Result<ProxyVar, String>> {
    pairs
        .filter(|(k, _)| PROXY_VARS.contains(&k.as_str()))
        .map(|(name, value)| Ok(ProxyVar { source: source.to_string(), name, value }))
        .collect()
}

/// `KEY=value` lines of /etc/environment (pam_env's format: optional quotes, no `export`).
fn environment_file(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        Some((k.trim().to_string(), v.trim().trim_matches(|c| c == '"' || c == '\'').to_string()))
    })
}

/// The guest agent's processes (daemon and handler loop): the extension inherits their environment.
/// The agent is `waagent` run by an interpreter (`python3 -u /usr/sbin/waagent -daemon`) or its self-update
/// (`python3 -u bin/WALinuxAgent-2.9.1.1-py3.6.egg -run-exthandlers`); a process merely running from under
/// /var/lib/waagent (an extension) is not the agent.
fn is_agent(p: &Process) -> bool {
    p.cmdline.iter().take(3).any(|a| {
        let name = a.rsplit('/').next().unwrap_or(a);
        name == "waagent" || (name.starts_with("WALinuxAgent-") && name.ends_with(".egg"))
    })
}

fn gather_proxy_vars(paths: &Paths, processes: &Input<Vec<Process>>) -> Vec<Result<ProxyVar, String>> {
    let mut out = vec![];
    for p in processes.as_deref().unwrap_or_default().iter().filter(|p| is_agent(p)) {
        let path = paths.proc().join(p.pid.to_string()).join("environ");
        match std::fs::read(&path) {
            Ok(b) => {
                let pairs = b.split(|c| *c == 0).filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                });
                out.extend(proxy_vars_of(&format!("pid {} ({})", p.pid, p.comm), pairs));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.push(Err(format!("{}: {e}", path.display()))),
        }
    }
    if paths.is_system() {
        out.extend(proxy_vars_of("ade-prep", std::env::vars()));
    }
    match read_optional(&paths.resolve(ETC_ENVIRONMENT)) {
        Ok(Some(t)) => out.extend(proxy_vars_of(ETC_ENVIRONMENT, environment_file(&t))),
        Ok(None) => {}
        Err(e) => out.push(Err(e)),
    }
    out
}

/// The first sign of the guest agent: its program, a WALinuxAgent-* folder (its self-updates), its process.
fn find_agent(paths: &Paths, processes: &Input<Vec<Process>>) -> Option<String> {
    let program = WAAGENT_PROGRAMS.iter().find(|p| paths.resolve(p).is_file()).map(|p| p.to_string());
    let folder = || {
        let rd = std::fs::read_dir(paths.waagent_dir()).ok()?;
        rd.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("WALinuxAgent-"))
            .map(|n| format!("{}/{n}", crate::paths::WAAGENT_DIR))
    };
    let process = || {
        let procs = processes.as_deref().ok()?;
        procs.iter().find(|p| is_agent(p)).map(|p| format!("pid {} ({})", p.pid, p.comm))
    };
    program.or_else(folder).or_else(process)
}

/// Reads the network facts under `paths` and looks the routes up with `routes` (None: not on this machine's
/// routing tables, since the root is not `/`).
pub fn gather(paths: &Paths, processes: &Input<Vec<Process>>, routes: Option<&dyn RouteLookup>) -> NetFacts {
    let waagent_conf = read_optional(&paths.resolve(WAAGENT_CONF));
    let wire_file = read_optional(&paths.resolve(WIRE_SERVER_FILE));
    let agent = find_agent(paths, processes);
    let routes = match routes {
        _ if agent.is_none() => Err(NO_AGENT.into()),
        None => Err("routes not looked up: the root is not /, and this machine's routes are not the tree's".into()),
        Some(r) => {
            let conf = waagent_conf.as_ref().ok().and_then(|c| c.as_deref().map(parse_waagent_conf)?.ok());
            let wire = wire_file.as_ref().ok().and_then(|f| wire_address(f).ok()).map(|(a, _)| a);
            let mut out = vec![];
            for (what, addr) in destinations(&conf, wire) {
                match addr {
                    Ok(addr) => out.push(Lookup { what, addr: Some(addr), route: r.route_to(addr) }),
                    // Not looked up: a Failed lookup makes the check unknown, with the reason.
                    Err(e) => out.push(Lookup { what, addr: None, route: Err(LookupError::Failed(e)) }),
                }
            }
            Ok(out)
        }
    };
    NetFacts { agent, proxy_vars: gather_proxy_vars(paths, processes), waagent_conf, wire_file, routes }
}

/// [`gather`] with this machine's kernel when `paths` is the running system.
pub fn gather_here(paths: &Paths, processes: &Input<Vec<Process>>) -> NetFacts {
    gather(paths, processes, paths.is_system().then_some(&Netlink as &dyn RouteLookup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::routes::FakeRoutes;

    fn unicast(via: [u8; 4]) -> Route {
        Route { kind: libc::RTN_UNICAST, dev: Some("eth0".into()), gateway: Some(via.into()), src: None }
    }

    fn facts(conf: Option<&str>, wire: Option<&str>, routes: &FakeRoutes) -> NetFacts {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("var/lib/waagent/WALinuxAgent-2.9.1.1")).unwrap();
        if let Some(c) = conf {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::write(r.join("etc/waagent.conf"), c).unwrap();
        }
        if let Some(w) = wire {
            std::fs::create_dir_all(r.join("var/lib/waagent")).unwrap();
            std::fs::write(r.join("var/lib/waagent/WireServerEndpoint"), w).unwrap();
        }
        gather(&Paths::under(r), &Ok(vec![]), Some(routes))
    }

    #[test]
    fn ade_reads_waagent_conf_its_own_way() {
        let p =
            parse_waagent_conf("# HttpProxy.Host=x\nHttpProxy.Host=\"10.0.0.9\"\nHttpProxy.Port=3128 # c\n").unwrap();
        assert_eq!(p, AgentProxy { host: Some("10.0.0.9".into()), port: Some("3128".into()) });
        assert!(p.in_use());
        let p = parse_waagent_conf("HttpProxy.Host=None\nHttpProxy.Port=3128\n").unwrap();
        assert!(!p.in_use());
        // spaces around `=`, or an indented comment holding one: ADE's parser fails on the line
        let e = parse_waagent_conf("Provisioning.Enabled=y\nHttpProxy.Host = proxy\n").unwrap_err();
        assert_eq!(e, "line 2: \"HttpProxy.Host = proxy\": no `=` in its first word");
        assert!(parse_waagent_conf("  # a=b\n").is_err());
    }

    #[test]
    fn wire_address_follows_ades_test() {
        assert_eq!(wire_address(&None).unwrap().0, WIRE_SERVER_IP);
        assert_eq!(wire_address(&Some("10.1.2.3\n".into())).unwrap().0, Ipv4Addr::new(10, 1, 2, 3));
        let (a, why) = wire_address(&Some("garbage\n".into())).unwrap();
        assert_eq!(a, WIRE_SERVER_IP);
        assert!(why.contains("ignores"), "{why}");
        // starts like an address, is none: ADE uses it as it is
        for bad in ["999.1.1.1", "10.0.0.1x"] {
            let e = wire_address(&Some(bad.into())).unwrap_err();
            assert!(e.contains(WIRE_SERVER_FILE) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn routes_are_looked_up_for_the_addresses_ade_uses() {
        let routes = FakeRoutes::default()
            .with(IMDS, Ok(unicast([10, 0, 0, 1])))
            .with(Ipv4Addr::new(10, 1, 2, 3), Err(LookupError::NoRoute("Network is unreachable".into())));
        let f = facts(Some("HttpProxy.Port=3128\n"), Some("10.1.2.3\n"), &routes);
        assert_eq!(routes.asked(), vec![IMDS, Ipv4Addr::new(10, 1, 2, 3)]);
        let c = route(&f);
        assert_eq!(c.result, Status::Fail);
        assert_eq!(
            c.evidence,
            format!(
                "IMDS 169.254.169.254: via 10.0.0.1 dev eth0; wire server 10.1.2.3: no route (Network is \
                 unreachable); {DUAL_PASS}"
            )
        );
        // a proxy in use: its address is looked up instead of the wire server's
        let routes = FakeRoutes::default()
            .with(IMDS, Ok(unicast([10, 0, 0, 1])))
            .with(Ipv4Addr::new(10, 0, 0, 9), Ok(unicast([10, 0, 0, 1])));
        let f = facts(Some("HttpProxy.Host=10.0.0.9\nHttpProxy.Port=3128\n"), None, &routes);
        assert_eq!(routes.asked(), vec![IMDS, Ipv4Addr::new(10, 0, 0, 9)]);
        assert_eq!(route(&f).result, Status::Pass, "{}", route(&f).evidence);
        assert!(route(&f).evidence.contains("proxy for the wire server (10.0.0.9) 10.0.0.9: via"));
        // a proxy by name is not resolved: unknown, saying why
        let f = facts(Some("HttpProxy.Host=proxy.corp\nHttpProxy.Port=3128\n"), None, &routes);
        assert_eq!(route(&f).result, Status::Unknown);
        assert!(route(&f).evidence.contains("not resolved"), "{}", route(&f).evidence);
        // a blackhole is no way out
        let routes = FakeRoutes::default()
            .with(IMDS, Ok(Route { kind: libc::RTN_BLACKHOLE, dev: None, gateway: None, src: None }))
            .with(WIRE_SERVER_IP, Ok(unicast([10, 0, 0, 1])));
        let c = route(&facts(Some(""), None, &routes));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.contains("IMDS 169.254.169.254: blackhole: no way out"), "{}", c.evidence);
    }

    #[test]
    fn proxy_settings_and_what_ade_does_with_them() {
        let none = FakeRoutes::default();
        let c = proxy(&facts(Some("Provisioning.Enabled=y\n"), None, &none));
        assert_eq!(c.result, Status::Pass, "{}", c.evidence);
        let c = proxy(&facts(Some("HttpProxy.Host=10.0.0.9\nHttpProxy.Port=3128\n"), None, &none));
        assert_eq!(c.result, Status::Warn);
        assert!(c.evidence.contains("HttpProxy.Host=10.0.0.9 HttpProxy.Port=3128"), "{}", c.evidence);
        let c = proxy(&facts(Some("HttpProxy.Host=10.0.0.9\nHttpProxy.Port=31x8\n"), None, &none));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.starts_with("/etc/waagent.conf: HttpProxy.Port \"31x8\" is not a port number"));
        let c = proxy(&facts(Some("HttpProxy.Host=10.0.0.9\n"), None, &none));
        assert_eq!(c.result, Status::Pass);
        assert!(c.evidence.contains("without HttpProxy.Port: ignored"), "{}", c.evidence);
        let c = proxy(&facts(None, None, &none));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.starts_with("no /etc/waagent.conf"), "{}", c.evidence);
        // no agent at all: nothing to judge, and no route looked up
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(
            bare.path().join("var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12"),
        )
        .unwrap();
        none.asked();
        let f = gather(&Paths::under(bare.path()), &Ok(vec![]), Some(&none));
        assert!(none.asked().is_empty());
        for c in [route(&f), proxy(&f), wire_server(&f)] {
            assert_eq!(c.result, Status::NotApplicable, "{}", c.id);
            assert!(c.evidence.starts_with("the guest agent is not installed"), "{}", c.evidence);
        }
        // its program is enough
        std::fs::create_dir_all(bare.path().join("usr/sbin")).unwrap();
        std::fs::write(bare.path().join("usr/sbin/waagent"), "").unwrap();
        let f = gather(&Paths::under(bare.path()), &Ok(vec![]), Some(&none));
        assert_eq!(f.agent.as_deref(), Some("/usr/sbin/waagent"));
        assert_eq!(proxy(&f).result, Status::Fail);
        let c = proxy(&facts(Some("HttpProxy.Host = x\n"), None, &none));
        assert_eq!(c.result, Status::Fail);
        assert!(c.evidence.starts_with("/etc/waagent.conf: line 1:"), "{}", c.evidence);
    }

    #[test]
    fn environment_proxies_are_listed_as_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/waagent.conf"), "").unwrap();
        std::fs::write(r.join("etc/environment"), "PATH=\"/usr/bin\"\nhttps_proxy=\"http://p:8080\"\n").unwrap();
        std::fs::create_dir_all(r.join("proc/812")).unwrap();
        std::fs::write(r.join("proc/812/environ"), b"LANG=C\0http_proxy=http://q:3128\0").unwrap();
        let agent = Process {
            pid: 812,
            ppid: Some(1),
            comm: "python3".into(),
            cmdline: vec!["python3".into(), "-u".into(), "/usr/sbin/waagent".into(), "-daemon".into()],
            cwd: None,
        };
        let f = gather(&Paths::under(r), &Ok(vec![agent]), None);
        let c = proxy(&f);
        assert_eq!(c.result, Status::Info, "{}", c.evidence);
        assert!(
            c.evidence.ends_with(
                "environment (not read by ADE's HTTP calls): http_proxy=http://q:3128 (pid 812 (python3)), \
                 https_proxy=http://p:8080 (/etc/environment)"
            ),
            "{}",
            c.evidence
        );
        // not on this machine: routes unknown, with the reason
        assert_eq!(route(&f).result, Status::Unknown);
        assert!(route(&f).evidence.contains("the root is not /"));
    }

    #[test]
    fn the_agent_is_its_program_not_an_extension_under_its_folder() {
        let p = |cmd: &[&str]| Process {
            pid: 1,
            ppid: None,
            comm: "x".into(),
            cmdline: cmd.iter().map(|s| s.to_string()).collect(),
            cwd: None,
        };
        assert!(is_agent(&p(&["/usr/bin/python3", "-u", "/usr/sbin/waagent", "-daemon"])));
        assert!(is_agent(&p(&["python3", "-u", "bin/WALinuxAgent-2.9.1.1-py3.6.egg", "-run-exthandlers"])));
        assert!(!is_agent(&p(&["/bin/sh", "-c", "/var/lib/waagent/Microsoft.Azure.Extensions.CustomScript-2.1.10/x"])));
        assert!(!is_agent(&p(&[
            "python3",
            "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12/main/handle.py"
        ])));
    }

    #[test]
    fn wire_server_file_cases() {
        let none = FakeRoutes::default();
        assert_eq!(wire_server(&facts(Some(""), None, &none)).result, Status::Pass);
        let c = wire_server(&facts(Some(""), Some("168.63.129.16\n"), &none));
        assert_eq!(c.result, Status::Pass);
        assert!(c.evidence.contains("gives 168.63.129.16"), "{}", c.evidence);
        assert_eq!(wire_server(&facts(Some(""), Some("\n"), &none)).result, Status::Warn);
        assert_eq!(wire_server(&facts(Some(""), Some("300.1.1.1"), &none)).result, Status::Fail);
    }
}
