//! Parsers for the string-encoded values of the topology file: durations, names, URLs, CIDRs,
//! DNS names. Each returns a message fit for a diagnostic on failure.

use std::net::IpAddr;
use std::time::Duration;

/// The longest name (region, zone, edge, keyspace, cluster) accepted.
pub(super) const MAX_NAME_LEN: usize = 63;

/// Parses `500ms`, `30s`, `5m`, `24h` or `7d`.
pub fn duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a number followed by ms, s, m, h or d, like `500ms`";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("`{text}` is not a duration: {EXPECTED}"));
    }
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` is not a duration: {EXPECTED}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit_ms))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

/// Renders a duration the way the file writes it (largest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Checks a name against `[a-z0-9][a-z0-9-]*` (with `_` too when `underscore`), at most
/// [`MAX_NAME_LEN`] characters. The error is `(message tail, hint)`.
pub(super) fn name(text: &str, underscore: bool) -> Result<(), (String, String)> {
    let pattern = if underscore {
        "[a-z0-9][a-z0-9_-]*"
    } else {
        "[a-z0-9][a-z0-9-]*"
    };
    if text.len() > MAX_NAME_LEN {
        return Err((
            format!("name `{text}` is longer than {MAX_NAME_LEN} characters"),
            "use a shorter name".to_string(),
        ));
    }
    if matches_name(text, underscore) {
        return Ok(());
    }
    let lower = text.to_ascii_lowercase().replace([' ', '.'], "-");
    let hint = if matches_name(&lower, underscore) {
        format!("names match {pattern}; did you mean `{lower}`?")
    } else {
        format!("names match {pattern}: lower-case letters, digits and `-`, like `us-east-1`")
    };
    Err((format!("name `{text}` must match {pattern}"), hint))
}

fn matches_name(text: &str, underscore: bool) -> bool {
    let ok_char = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (underscore && c == '_')
    };
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok && text.chars().all(ok_char)
}

/// A validated `http://host:port` (or `https://` when `https_ok`); returns `host:port`.
pub(super) fn http_url(text: &str, https_ok: bool) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://").filter(|_| https_ok))
        .ok_or_else(|| {
            if https_ok {
                format!("`{text}` must start with `http://` or `https://`")
            } else {
                format!("`{text}` must start with `http://`")
            }
        })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('?') || authority.contains('#') {
        return Err(format!(
            "`{text}` must be a bare scheme://host:port, without a path"
        ));
    }
    host_port(authority).map_err(|e| format!("`{text}`: {e}"))?;
    Ok(authority.to_string())
}

/// Checks `host:port` where host is an IPv4 address, `[IPv6]` or a DNS name, and port is 1..=65535.
fn host_port(text: &str) -> Result<(), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("a port is required, like `:7601`")?;
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0 is not a fixed port".to_string()),
        Ok(_) => {}
        Err(_) => return Err(format!("`{port}` is not a port number (1-65535)")),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("`{v6}` is not an IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || dns_name(host).is_ok() {
        Ok(())
    } else {
        Err(format!("`{host}` is not an IP address or host name"))
    }
}

/// Validates a CIDR prefix like `10.0.0.0/8` or `fd00::/8`; a bare address means one host.
pub(super) fn cidr(text: &str) -> Result<(), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}` is not a CIDR prefix like `10.0.0.0/8`"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let Some(len) = len else { return Ok(()) };
    let len: u32 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?;
    let host_bits = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) & mask_low(32 - len),
        IpAddr::V6(v6) => u128::from(v6) & mask_low(128 - len),
    };
    if host_bits != 0 {
        let net = match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4) & !(mask_low(32 - len) as u32);
                IpAddr::from(std::net::Ipv4Addr::from(bits))
            }
            IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(
                u128::from(v6) & !mask_low(128 - len),
            )),
        };
        return Err(format!(
            "`{text}` has host bits set; did you mean `{net}/{len}`?"
        ));
    }
    Ok(())
}

fn mask_low(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Validates a DNS name (labels of letters, digits, `-`, `_`, optional trailing dot, `*` as the
/// first label). The root `.` alone is not accepted.
pub(super) fn dns_name(text: &str) -> Result<(), String> {
    let body = text.strip_suffix('.').unwrap_or(text);
    if body.is_empty() || text.len() > 253 {
        return Err(format!("`{text}` is not a DNS name"));
    }
    for (i, label) in body.split('.').enumerate() {
        let ok = (i == 0 && label == "*")
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !ok {
            return Err(format!("`{text}` is not a DNS name (bad label `{label}`)"));
        }
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `wrong`, if it is close enough to be a likely typo.
/// Parses `"200-299,304"`: comma-separated status codes and inclusive ranges, 100..=599.
pub(super) fn status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(c @ 100..=599) => Ok(c),
            Ok(c) => Err(format!("{c} is not an HTTP status code (100-599)")),
            Err(_) => Err(format!("`{}` is not a status code", s.trim())),
        }
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (code(lo)?, code(hi)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is backwards"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

pub(super) fn closest<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wrong_lower = wrong.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&wrong_lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(wrong.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(duration("1.5s").is_err());
        assert!(duration("s").is_err());
        assert!(duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn status_code_ranges() {
        assert_eq!(status_ranges("200-299"), Ok(vec![(200, 299)]));
        assert_eq!(
            status_ranges("200, 204,300-399"),
            Ok(vec![(200, 200), (204, 204), (300, 399)])
        );
        assert_eq!(
            status_ranges("299-200"),
            Err("range 299-200 is backwards".to_string())
        );
        assert_eq!(
            status_ranges("600"),
            Err("600 is not an HTTP status code (100-599)".to_string())
        );
        assert!(status_ranges("2xx").is_err());
        assert!(status_ranges("").is_err());
        assert!(status_ranges("200,").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr("127.0.0.0/8").is_ok());
        assert!(cidr("::1").is_ok());
        assert!(cidr("fd00::/8").is_ok());
        assert_eq!(
            cidr("127.0.0.1/8"),
            Err("`127.0.0.1/8` has host bits set; did you mean `127.0.0.0/8`?".to_string())
        );
        assert!(cidr("10.0.0.0/33").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            http_url("http://127.0.0.1:7601", false),
            Ok("127.0.0.1:7601".to_string())
        );
        assert_eq!(
            http_url("http://[::1]:7601/", false),
            Ok("[::1]:7601".to_string())
        );
        assert!(http_url("https://a:1", false).is_err());
        assert!(http_url("http://a", false).is_err());
        assert!(http_url("http://a:1/x", true).is_err());
        assert_eq!(http_url("https://a:1", true), Ok("a:1".to_string()));
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("quorm", ["quorum", "name"]), Some("quorum"));
        assert_eq!(closest("zzz", ["quorum", "name"]), None);
    }
}
