//! The bearer-token check of admin calls (the node's `/v1/admin/*`, the edge's admin API).

/// Whether `authorization` (an `Authorization` header's value) is `Bearer <secret>`, surrounding
/// whitespace of the token aside. The comparison takes the same time wherever the token differs
/// from `secret`, so a client cannot learn the secret a byte at a time by timing refusals.
pub fn bearer_is(authorization: Option<&str>, secret: &str) -> bool {
    let Some(given) = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
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
        for refused in [
            None,
            Some(""),
            Some("0123456789abcdef"),
            Some("Basic 0123456789abcdef"),
            Some("Bearer 0123456789abcdeF"),
            Some("Bearer 0123456789abcde"),
            Some("Bearer 0123456789abcdef0"),
            Some("Bearer "),
        ] {
            assert!(!bearer_is(refused, secret), "{refused:?}");
        }
    }
}
