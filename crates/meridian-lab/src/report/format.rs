//! Number formats shared by the terminal and HTML renderings, so both say the same thing.

/// A dash for a missing value.
pub(crate) const NONE: &str = "—";

/// Milliseconds: one decimal below 100 ms, none above (`—` when not finite).
pub(crate) fn ms(v: f64) -> String {
    if !v.is_finite() {
        NONE.to_owned()
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Seconds with one decimal and a unit, e.g. `4.2s` (`—` when not finite).
pub(crate) fn secs(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}s")
    } else {
        NONE.to_owned()
    }
}

/// Like [`secs`], `—` for `None`.
pub(crate) fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| NONE.to_owned(), secs)
}

/// Bytes in decimal units (`B`, `kB`, `MB`, `GB`, `TB`), three significant digits or so.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = UNITS[0];
    for u in UNITS {
        v /= 1000.0;
        unit = u;
        if v < 1000.0 {
            break;
        }
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// US dollars: two decimals from $1, else two significant digits (the egress of a short run
/// is fractions of a cent), `$0` for nothing.
pub(crate) fn usd(v: f64) -> String {
    if !v.is_finite() {
        NONE.to_owned()
    } else if v == 0.0 {
        "$0".to_owned()
    } else if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        let decimals = (1.0 - v.abs().log10().floor()).clamp(2.0, 12.0) as usize;
        format!("${v:.decimals$}")
    }
}

/// `part` as a percentage of `whole` with two decimals; `0.00%` when `whole` is 0.
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0.00%".to_owned()
    } else {
        format!("{:.2}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A rate with at most one decimal, e.g. `200` or `12.5`.
pub(crate) fn rate(v: f64) -> String {
    if !v.is_finite() {
        NONE.to_owned()
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1234.5), "1234");
        assert_eq!(ms(f64::NAN), NONE);
        assert_eq!(opt_secs(None), NONE);
        assert_eq!(opt_secs(Some(4.25)), "4.2s");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.50 kB");
        assert_eq!(bytes(12_300_000), "12.3 MB");
        assert_eq!(bytes(u64::MAX), "18446744.1 TB");
        assert_eq!(usd(0.01234), "$0.012");
        assert_eq!(usd(0.000111), "$0.00011");
        assert_eq!(usd(0.5), "$0.50");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(12.0), "$12.00");
        assert_eq!(percent(1, 3), "33.33%");
        assert_eq!(percent(1, 0), "0.00%");
        assert_eq!(rate(200.0), "200");
        assert_eq!(rate(12.5), "12.5");
    }
}
