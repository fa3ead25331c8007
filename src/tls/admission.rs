//! Peer admission: an allow-list of IP addresses and CIDR ranges, for plain TCP and TLS alike.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use mllp_actors::{Established, Transport};
use tokio::net::TcpStream;

use super::error::AdmissionError;

/// Which peer addresses may connect.
///
/// Rules are single addresses (`192.0.2.7`, `2001:db8::7`) or CIDR ranges (`10.0.0.0/8`,
/// `2001:db8::/32`, `0.0.0.0/0`). Host bits in a range are ignored (`10.1.2.3/8` means
/// `10.0.0.0/8`). IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`, which a dual-stack listener
/// reports for IPv4 peers) are matched as the IPv4 address they carry, and an IPv4-mapped IPv6
/// range is matched as the IPv4 range it covers.
///
/// The default, [`Admission::any`], admits everyone. An allow-list with no rules admits no one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `None` admits everyone; otherwise the rules, already canonical (mapped ranges as IPv4).
    rules: Option<Vec<IpNet>>,
}

impl Admission {
    /// Admits every peer. This is the default.
    pub fn any() -> Self {
        Admission { rules: None }
    }

    /// Admits only peers matching one of `rules` (addresses or CIDR ranges).
    ///
    /// # Errors
    ///
    /// [`AdmissionError::InvalidRule`] naming the first rule that is neither.
    pub fn allow_list<I, S>(rules: I) -> Result<Self, AdmissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let rules = rules
            .into_iter()
            .map(|r| parse_rule(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Admission { rules: Some(rules) })
    }

    /// Whether `peer` may connect.
    pub fn admits(&self, peer: IpAddr) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let peer = peer.to_canonical();
        rules.iter().any(|net| net.contains(&peer))
    }

    /// Whether this admits everyone (no allow-list).
    pub fn is_any(&self) -> bool {
        self.rules.is_none()
    }
}

impl FromStr for Admission {
    type Err = AdmissionError;

    /// A comma-separated allow-list, e.g. `"10.0.0.0/8, 2001:db8::/32"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Admission::allow_list(s.split(',').map(str::trim))
    }
}

/// Parses one rule into a canonical network: host bits cleared, IPv4-mapped IPv6 as IPv4.
fn parse_rule(rule: &str) -> Result<IpNet, AdmissionError> {
    let invalid = || AdmissionError::InvalidRule {
        rule: rule.to_owned(),
    };
    let net = if rule.contains('/') {
        IpNet::from_str(rule).map_err(|_| invalid())?
    } else {
        IpNet::from(IpAddr::from_str(rule).map_err(|_| invalid())?)
    };
    Ok(canonical(net).trunc())
}

/// An IPv6 range inside `::ffff:0:0/96` as the IPv4 range it covers; anything else unchanged.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped);
    }
    net
}

/// A [`Transport`] that admits only peers allowed by an [`Admission`], then hands the socket to
/// the inner transport.
///
/// ```
/// use mllp::server::PlainTcp;
/// use mllp::tls::{Admission, Admitted};
///
/// let transport = Admitted::new(PlainTcp, Admission::allow_list(["10.0.0.0/8", "::1"])?);
/// assert!(transport.admission().admits("10.1.2.3".parse()?));
/// assert!(transport.admission().admits("::1".parse()?));
/// assert!(!transport.admission().admits("192.0.2.7".parse()?));
/// let server = mllp::Server::builder().transport(transport);
/// # let _ = server;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Admitted<T> {
    inner: T,
    admission: Admission,
}

impl<T> Admitted<T> {
    /// Wraps `inner`, admitting only peers that `admission` allows.
    pub fn new(inner: T, admission: Admission) -> Self {
        Admitted { inner, admission }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The admission rules.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }
}

impl<T: Transport> Transport for Admitted<T> {
    type Stream = T::Stream;

    fn admit(&self, peer: SocketAddr) -> bool {
        self.admission.admits(peer.ip()) && self.inner.admit(peer)
    }

    fn tls(&self) -> bool {
        self.inner.tls()
    }

    fn handshake(
        &self,
        socket: TcpStream,
    ) -> impl Future<Output = io::Result<Established<T::Stream>>> + Send {
        self.inner.handshake(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mllp_actors::PlainTcp;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// With no allow-list everyone is admitted.
    #[test]
    fn default_admits_everyone() {
        let any = Admission::default();
        assert!(any.is_any());
        assert!(any.admits(ip("203.0.113.9")));
        assert!(any.admits(ip("2001:db8::1")));
    }

    /// An IPv4 range admits its members and nothing else.
    #[test]
    fn ipv4_cidr_admits_members_only() {
        let a = Admission::allow_list(["10.0.0.0/8"]).unwrap();
        assert!(a.admits(ip("10.0.0.0")));
        assert!(a.admits(ip("10.255.255.255")));
        assert!(!a.admits(ip("11.0.0.0")));
        assert!(!a.admits(ip("9.255.255.255")));
        assert!(!a.admits(ip("2001:db8::1")));
    }

    /// A /32 (or a bare address) admits exactly one host.
    #[test]
    fn slash_32_and_bare_address_admit_one_host() {
        for rules in [["192.0.2.7/32"], ["192.0.2.7"]] {
            let a = Admission::allow_list(rules).unwrap();
            assert!(a.admits(ip("192.0.2.7")));
            assert!(!a.admits(ip("192.0.2.8")));
            assert!(!a.admits(ip("192.0.2.6")));
        }
    }

    /// /0 admits the whole address family, and only that family.
    #[test]
    fn slash_0_admits_the_whole_family() {
        let v4 = Admission::allow_list(["0.0.0.0/0"]).unwrap();
        assert!(v4.admits(ip("0.0.0.0")));
        assert!(v4.admits(ip("255.255.255.255")));
        assert!(!v4.admits(ip("2001:db8::1")));
        let v6 = Admission::allow_list(["::/0"]).unwrap();
        assert!(v6.admits(ip("2001:db8::1")));
        assert!(!v6.admits(ip("192.0.2.1")));
    }

    /// IPv6 ranges and addresses match IPv6 peers.
    #[test]
    fn ipv6_cidr_admits_members_only() {
        let a = Admission::allow_list(["2001:db8::/32", "::1"]).unwrap();
        assert!(a.admits(ip("2001:db8:ffff::1")));
        assert!(!a.admits(ip("2001:db9::1")));
        assert!(a.admits(ip("::1")));
        assert!(!a.admits(ip("::2")));
    }

    /// A dual-stack listener's IPv4-mapped peer address matches IPv4 rules.
    #[test]
    fn ipv4_mapped_peer_matches_ipv4_rule() {
        let a = Admission::allow_list(["192.0.2.0/24"]).unwrap();
        assert!(a.admits(ip("::ffff:192.0.2.7")));
        assert!(!a.admits(ip("::ffff:198.51.100.7")));
    }

    /// An IPv4-mapped IPv6 rule matches plain IPv4 peers and mapped ones.
    #[test]
    fn ipv4_mapped_rule_matches_ipv4_peer() {
        let a = Admission::allow_list(["::ffff:192.0.2.0/120"]).unwrap();
        assert!(a.admits(ip("192.0.2.7")));
        assert!(a.admits(ip("::ffff:192.0.2.7")));
        assert!(!a.admits(ip("192.0.3.7")));
        let host = Admission::allow_list(["::ffff:192.0.2.7"]).unwrap();
        assert!(host.admits(ip("192.0.2.7")));
        assert!(!host.admits(ip("192.0.2.8")));
    }

    /// Host bits in a range are ignored rather than narrowing it to one host.
    #[test]
    fn host_bits_in_range_are_ignored() {
        let a = Admission::allow_list(["10.1.2.3/8"]).unwrap();
        assert!(a.admits(ip("10.200.0.1")));
    }

    /// Anything that is not an address or a range is a typed error naming the rule.
    #[test]
    fn invalid_rules_are_typed_errors() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/-1",
            "host.example.org",
            "10.0.0.0/8/8",
            "2001:db8::g",
            " 10.0.0.1",
        ] {
            let err = Admission::allow_list([bad]).unwrap_err();
            assert_eq!(
                err,
                AdmissionError::InvalidRule {
                    rule: bad.to_owned()
                }
            );
            assert!(err.to_string().contains("invalid peer address"), "{err}");
        }
    }

    /// An empty allow-list admits no one (it is not the same as no allow-list).
    #[test]
    fn empty_allow_list_admits_no_one() {
        let none = Admission::allow_list(Vec::<String>::new()).unwrap();
        assert!(!none.is_any());
        assert!(!none.admits(ip("127.0.0.1")));
    }

    /// The comma-separated form parses each rule.
    #[test]
    fn parses_comma_separated_list() {
        let a: Admission = "10.0.0.0/8, 2001:db8::/32".parse().unwrap();
        assert!(a.admits(ip("10.1.1.1")));
        assert!(a.admits(ip("2001:db8::1")));
        assert!("10.0.0.0/8, nope".parse::<Admission>().is_err());
    }

    /// The wrapper consults the allow-list with the peer's IP (the port is irrelevant).
    #[test]
    fn admitted_transport_checks_the_peer_ip() {
        let t = Admitted::new(PlainTcp, Admission::allow_list(["127.0.0.1"]).unwrap());
        assert!(t.admit("127.0.0.1:40000".parse().unwrap()));
        assert!(t.admit("[::ffff:127.0.0.1]:40000".parse().unwrap()));
        assert!(!t.admit("127.0.0.2:40000".parse().unwrap()));
    }
}
