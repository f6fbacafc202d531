//! The kernel's answer to "which route would a packet to this address take", like `ip route get`, asked over a
//! raw rtnetlink socket (one RTM_GETROUTE request, one answer): nothing is sent on any network, the kernel only
//! looks the address up in its routing tables. An edge (`RouteLookup` → `Netlink`); it must not judge whether a
//! route is good enough for ADE (checks::network does) nor look up anything but IPv4 unicast destinations.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What the kernel would do with a packet to the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's type: 1 unicast, 2 local, 6 blackhole, 7 unreachable, 8 prohibit (`rtm_type`).
    pub kind: u8,
    /// The outgoing interface, by name (its index when the name cannot be had).
    pub dev: Option<String>,
    /// The next hop, when not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The source address the kernel would pick.
    pub src: Option<Ipv4Addr>,
}

impl Route {
    /// A route a packet can leave by (unicast, or a local address).
    pub fn usable(&self) -> bool {
        self.kind == libc::RTN_UNICAST || self.kind == libc::RTN_LOCAL
    }

    /// `via 10.0.0.1 dev eth0 src 10.0.0.4`, like `ip route get` prints it.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        match self.kind {
            libc::RTN_UNICAST => {}
            libc::RTN_LOCAL => parts.push("local".to_string()),
            libc::RTN_BLACKHOLE => parts.push("blackhole".to_string()),
            libc::RTN_UNREACHABLE => parts.push("unreachable".to_string()),
            libc::RTN_PROHIBIT => parts.push("prohibit".to_string()),
            k => parts.push(format!("type {k}")),
        }
        if let Some(g) = self.gateway {
            parts.push(format!("via {g}"));
        }
        if let Some(d) = &self.dev {
            parts.push(format!("dev {d}"));
        }
        if let Some(s) = self.src {
            parts.push(format!("src {s}"));
        }
        parts.join(" ")
    }
}

/// Why there is no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The kernel has no route (its errno text: "Network is unreachable", "No route to host"...).
    #[error("no route: {0}")]
    NoRoute(String),
    /// The question could not be asked or the answer made no sense.
    #[error("route lookup failed: {0}")]
    Failed(String),
}

/// Looks routes up; one real implementation ([`Netlink`]), a fake in src/testing/routes.rs.
pub trait RouteLookup {
    /// The route to `dst`, as the kernel would choose it now.
    fn route_to(&self, dst: Ipv4Addr) -> Result<Route, LookupError>;
}

/// Asks this machine's kernel, in the network namespace of the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Netlink;

const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;
const RTA_HDR: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The RTM_GETROUTE request for `dst` with sequence number `seq` (pure, for the test of its layout).
fn request(dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDR + RTMSG + RTA_HDR + 4;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills in ours
                                              // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    m.extend_from_slice(&[libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&((RTA_HDR + 4) as u16).to_ne_bytes());
    m.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
    m.extend_from_slice(&dst.octets());
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn ip_at(b: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Reads the kernel's answer to request `seq`: a route, or the errno of an NLMSG_ERROR; `ifname` names an
/// interface index (pure apart from it).
fn parse_answer(buf: &[u8], seq: u32, ifname: &dyn Fn(u32) -> String) -> Result<Route, LookupError> {
    let bad = |what: &str| LookupError::Failed(format!("rtnetlink answer: {what}"));
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, off).ok_or_else(|| bad("short header"))? as usize;
        let kind = u16_at(buf, off + 4).ok_or_else(|| bad("short header"))?;
        let got_seq = u32_at(buf, off + 8).ok_or_else(|| bad("short header"))?;
        if len < NLMSG_HDR || off + len > buf.len() {
            return Err(bad("message length out of bounds"));
        }
        let body = &buf[off + NLMSG_HDR..off + len];
        off += align4(len);
        if got_seq != seq {
            continue;
        }
        if kind == libc::NLMSG_ERROR as u16 {
            let err = u32_at(body, 0).ok_or_else(|| bad("short error"))? as i32;
            if err == 0 {
                return Err(bad("an acknowledgement where a route was expected"));
            }
            let text = std::io::Error::from_raw_os_error(-err).to_string();
            return Err(match -err {
                libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL => LookupError::NoRoute(text),
                _ => LookupError::Failed(text),
            });
        }
        if kind != libc::RTM_NEWROUTE {
            continue;
        }
        if body.len() < RTMSG {
            return Err(bad("short rtmsg"));
        }
        let mut route = Route { kind: body[7], dev: None, gateway: None, src: None };
        let mut a = RTMSG;
        while a + RTA_HDR <= body.len() {
            let alen = u16_at(body, a).unwrap_or(0) as usize;
            let atype = u16_at(body, a + 2).unwrap_or(0);
            if alen < RTA_HDR || a + alen > body.len() {
                return Err(bad("attribute length out of bounds"));
            }
            let val = &body[a + RTA_HDR..a + alen];
            match atype {
                libc::RTA_OIF => route.dev = u32_at(val, 0).map(ifname),
                libc::RTA_GATEWAY => route.gateway = ip_at(val),
                libc::RTA_PREFSRC => route.src = ip_at(val),
                _ => {}
            }
            a += align4(alen);
        }
        return Ok(route);
    }
    Err(bad("no answer to the request"))
}

fn if_name(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires; the result is NUL-terminated on success.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {index}");
    }
    // SAFETY: on success p points into buf, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn os_err(what: &str) -> LookupError {
    LookupError::Failed(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl RouteLookup for Netlink {
    fn route_to(&self, dst: Ipv4Addr) -> Result<Route, LookupError> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(os_err("netlink socket"));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: tv lives across the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_nl is plain old data; zeroed is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let seq = std::process::id() ^ u32::from(dst);
        let req = request(dst, seq);
        // SAFETY: req and kernel outlive the call; their sizes are passed.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(os_err("rtnetlink send"));
        }
        let mut buf = vec![0u8; 8192];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(os_err("rtnetlink receive"));
        }
        parse_answer(&buf[..n as usize], seq, &if_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u32) -> String {
        format!("if{i}")
    }

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((RTA_HDR + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn request_asks_for_one_ipv4_host() {
        let r = request(Ipv4Addr::new(168, 63, 129, 16), 7);
        assert_eq!(r.len(), 36);
        assert_eq!(u32_at(&r, 0), Some(36));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETROUTE));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 32, "dst_len: one host");
        assert_eq!(u16_at(&r, 30), Some(libc::RTA_DST));
        assert_eq!(&r[32..], &[168, 63, 129, 16]);
    }

    #[test]
    fn answer_gives_the_route_or_the_reason() {
        let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, libc::RTN_UNICAST, 0, 0, 0, 0];
        body.extend(attr(libc::RTA_DST, &[169, 254, 169, 254]));
        body.extend(attr(libc::RTA_OIF, &3u32.to_ne_bytes()));
        body.extend(attr(libc::RTA_GATEWAY, &[10, 0, 0, 1]));
        body.extend(attr(libc::RTA_PREFSRC, &[10, 0, 0, 4]));
        let r = parse_answer(&message(libc::RTM_NEWROUTE, 9, &body), 9, &name).unwrap();
        assert_eq!(r.describe(), "via 10.0.0.1 dev if3 src 10.0.0.4");
        assert!(r.usable());
        // another request's answer is skipped
        assert!(matches!(parse_answer(&message(libc::RTM_NEWROUTE, 8, &body), 9, &name), Err(LookupError::Failed(_))));
        let err = message(libc::NLMSG_ERROR as u16, 9, &(-libc::ENETUNREACH).to_ne_bytes());
        assert_eq!(
            parse_answer(&err, 9, &name),
            Err(LookupError::NoRoute("Network is unreachable (os error 101)".into()))
        );
        let mut blackhole = body.clone();
        blackhole[7] = libc::RTN_BLACKHOLE;
        let r = parse_answer(&message(libc::RTM_NEWROUTE, 9, &blackhole), 9, &name).unwrap();
        assert!(!r.usable());
        assert!(r.describe().starts_with("blackhole"));
        // truncated: an error, not a panic
        let whole = message(libc::RTM_NEWROUTE, 9, &body);
        for cut in [3, 17, whole.len() - 5] {
            assert!(parse_answer(&whole[..cut], 9, &name).is_err(), "cut at {cut}");
        }
    }

    /// Runs `f` on a thread moved into a fresh network namespace (only a loopback, down), after `setup` (shell
    /// commands run from that thread, so in that namespace). Root only.
    fn in_fresh_netns<T: Send + 'static>(setup: &'static str, f: fn() -> T) -> T {
        std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread, which then only uses its own descriptors.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "{}", std::io::Error::last_os_error());
            if !setup.is_empty() {
                let st = std::process::Command::new("sh").args(["-ec", setup]).status().expect("sh");
                assert!(st.success(), "{setup}");
            }
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn real_lookup_in_a_fresh_namespace() {
        if crate::testing::skip_unless(crate::testing::root(), "needs root for unshare(CLONE_NEWNET)") {
            return;
        }
        // Only loopback: no route to IMDS.
        let r = in_fresh_netns("", || Netlink.route_to(Ipv4Addr::new(169, 254, 169, 254)));
        assert!(matches!(&r, Err(LookupError::NoRoute(e)) if e.contains("unreachable")), "{r:?}");
        // A veth pair (this kernel has no dummy driver) with a host route to the wire server through a gateway.
        let setup = "ip link add ade0 type veth peer name ade1; ip link set ade0 up; ip link set ade1 up; \
                     ip addr add 10.9.0.1/24 dev ade0; ip route add 168.63.129.16/32 via 10.9.0.2 dev ade0";
        let (wire, imds) = in_fresh_netns(setup, || {
            (Netlink.route_to(Ipv4Addr::new(168, 63, 129, 16)), Netlink.route_to(Ipv4Addr::new(169, 254, 169, 254)))
        });
        let wire = wire.unwrap();
        assert_eq!(wire.describe(), "via 10.9.0.2 dev ade0 src 10.9.0.1");
        assert!(wire.usable());
        assert!(matches!(imds, Err(LookupError::NoRoute(_))), "{imds:?}");
    }
}
