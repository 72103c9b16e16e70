//! Textual specifications of links and delays, as the `meridian wan` command line takes them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::LabError;

/// A relay to start: connections from `from` to `to` arrive on `listen` and go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// The region that connects (its `--peer` URL points at `listen`).
    pub from: String,
    /// The region that is connected to.
    pub to: String,
    /// Where the relay listens.
    pub listen: SocketAddr,
    /// Where `to` listens.
    pub upstream: SocketAddr,
}

impl LinkSpec {
    /// Parses `FROM:TO:LISTEN_PORT:UPSTREAM_PORT` (both on 127.0.0.1) or
    /// `FROM:TO:LISTEN_IP:LISTEN_PORT:UPSTREAM_IP:UPSTREAM_PORT` (IPv4).
    pub fn parse(s: &str) -> Result<LinkSpec, LabError> {
        let bad = |reason: &str| LabError::Parse {
            input: s.to_string(),
            reason: format!(
                "{reason}; expected FROM:TO:LISTEN_PORT:UPSTREAM_PORT, e.g. us-east-1:eu-west-1:9701:7602"
            ),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad(&format!("`{p}` is not a port")))
        };
        let ip = |p: &str| {
            p.parse::<IpAddr>()
                .map_err(|_| bad(&format!("`{p}` is not an IP address")))
        };
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (listen, upstream) = match parts.as_slice() {
            [_, _, l, u] => (
                SocketAddr::new(loopback, port(l)?),
                SocketAddr::new(loopback, port(u)?),
            ),
            [_, _, li, lp, ui, up] => (
                SocketAddr::new(ip(li)?, port(lp)?),
                SocketAddr::new(ip(ui)?, port(up)?),
            ),
            _ => return Err(bad("wrong number of fields")),
        };
        if parts[0].is_empty() || parts[1].is_empty() || parts[0] == parts[1] {
            return Err(bad("FROM and TO must be two different regions"));
        }
        Ok(LinkSpec {
            from: parts[0].to_string(),
            to: parts[1].to_string(),
            listen,
            upstream,
        })
    }
}

/// Parses `A:B:MS`: a one-way delay for both directions between regions A and B.
pub fn parse_delay(s: &str) -> Result<(String, String, Duration), LabError> {
    let bad = |reason: &str| LabError::Parse {
        input: s.to_string(),
        reason: format!("{reason}; expected A:B:MS, e.g. us-east-1:eu-west-1:40"),
    };
    match s.split(':').collect::<Vec<_>>().as_slice() {
        [a, b, ms] if !a.is_empty() && !b.is_empty() => {
            let ms: f64 = ms
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad(&format!("`{ms}` is not a delay in ms")))?;
            Ok((
                a.to_string(),
                b.to_string(),
                Duration::from_secs_f64(ms / 1000.0),
            ))
        }
        _ => Err(bad("wrong number of fields")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_in_both_forms() {
        let l = LinkSpec::parse("us-east-1:eu-west-1:9701:7602").expect("short");
        assert_eq!(l.from, "us-east-1");
        assert_eq!(l.listen, "127.0.0.1:9701".parse().expect("addr"));
        assert_eq!(l.upstream, "127.0.0.1:7602".parse().expect("addr"));
        let l = LinkSpec::parse("a:b:127.0.0.2:1:127.0.0.3:2").expect("long");
        assert_eq!(l.upstream, "127.0.0.3:2".parse().expect("addr"));
        for bad in ["a:b:1", "a:a:1:2", "a:b:x:2", "a:b:1.2.3:1:127.0.0.1:2"] {
            assert!(LinkSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delays_parse() {
        let (a, b, d) = parse_delay("a:b:40.5").expect("delay");
        assert_eq!(
            (a.as_str(), b.as_str(), d),
            ("a", "b", Duration::from_micros(40_500))
        );
        assert!(parse_delay("a:b").is_err());
        assert!(parse_delay("a:b:-3").is_err());
    }
}
