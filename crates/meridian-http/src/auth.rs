//! Bearer tokens: the one of an `Authorization` header, and the check of admin calls (the
//! node's `/v1/admin/*`, the edge's admin API).

/// The token of `authorization` (an `Authorization` header's value) when its scheme is
/// `Bearer` — in any case, as RFC 9110 §11.1 has schemes — without surrounding whitespace.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `authorization` is `Bearer <secret>` ([`bearer_token`]). The comparison takes the
/// same time wherever the token differs from `secret`, so a client cannot learn the secret a
/// byte at a time by timing refusals.
pub fn bearer_is(authorization: Option<&str>, secret: &str) -> bool {
    let Some(given) = bearer_token(authorization) else {
        return false;
    };
    given.len() == secret.len()
        && given
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |differs, (a, b)| differs | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::bearer_is;

    #[test]
    fn only_the_secret_as_a_bearer_token_passes() {
        let secret = "0123456789abcdef";
        assert!(bearer_is(Some("Bearer 0123456789abcdef"), secret));
        assert!(bearer_is(Some("Bearer 0123456789abcdef \n"), secret));
        assert!(bearer_is(Some("bearer 0123456789abcdef"), secret));
        assert!(bearer_is(Some("BEARER  0123456789abcdef"), secret));
        for refused in [
            None,
            Some(""),
            Some("0123456789abcdef"),
            Some("Basic 0123456789abcdef"),
            Some("Bearer 0123456789abcdeF"),
            Some("Bearer 0123456789abcde"),
            Some("Bearer 0123456789abcdef0"),
            Some("Bearer "),
            Some("Bearer"),
            Some("Bearers 0123456789abcdef"),
        ] {
            assert!(!bearer_is(refused, secret), "{refused:?}");
        }
    }
}
