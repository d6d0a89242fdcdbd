//! Who may do what, for the API and the dashboard alike: `server.token` may read and
//! act, `server.read_token` may only read, and anybody may read when
//! `server.public_read` is set. A bearer token, a login and a session cookie are all
//! judged by this one rule. This module compares secrets; it knows no HTTP.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Server;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Operate,
}

/// True when `given` is `token`. Both are hashed first and the digests compared in
/// constant time: comparing the raw bytes would return early on a length mismatch, and
/// so tell the token's length. An empty token never matches, whatever the config says
/// (the config refuses one; this holds even if one got through).
pub(super) fn is_token(given: &str, token: &SecretString) -> bool {
    let expected = token.expose_secret();
    !given.is_empty()
        && !expected.is_empty()
        && bool::from(
            Sha256::digest(given.as_bytes())
                .as_slice()
                .ct_eq(Sha256::digest(expected.as_bytes()).as_slice()),
        )
}

/// The access a credential gives, and the configured token that gives it: the
/// operator's token first, then the read token. `proves(token, access)` says whether
/// the credential is that token (or was made with it, for that access).
pub(super) fn granted(
    server: &Server,
    proves: impl Fn(&SecretString, Access) -> bool,
) -> Option<(Access, &SecretString)> {
    [
        (server.token.as_ref(), Access::Operate),
        (server.read_token.as_ref(), Access::Read),
    ]
    .into_iter()
    .find_map(|(token, access)| {
        token
            .filter(|token| proves(token, access))
            .map(|token| (access, token))
    })
}

/// The access a token gives, and the configured token it is; `None` when it is neither.
pub(super) fn token_access<'a>(
    server: &'a Server,
    given: &str,
) -> Option<(Access, &'a SecretString)> {
    granted(server, |token, _| is_token(given, token))
}

/// The access of a request that shows no credential.
pub(super) fn anonymous_access(server: &Server) -> Option<Access> {
    server.public_read.then_some(Access::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_wrong_token_never_matches() {
        let check = |given: &str, token: &str, expected: bool| {
            let token = SecretString::from(token.to_string());
            assert_eq!(
                is_token(given, &token),
                expected,
                "{given:?} against {token:?}"
            );
        };
        check("operator-token", "operator-token", true);
        check("", "", false);
        check("", "operator-token", false);
        check("operator-token", "", false);
        check("operator-toke", "operator-token", false);
        check("operator-token-", "operator-token", false);
        check("operator-tokeN", "operator-token", false);
    }

    #[test]
    fn the_operator_token_operates_the_read_token_reads() {
        let secret = |token: Option<&str>| token.map(|token| SecretString::from(token.to_string()));
        let server = |token: Option<&str>, read_token: Option<&str>, public_read: bool| Server {
            listen: ([127, 0, 0, 1], 8700).into(),
            token: secret(token),
            read_token: secret(read_token),
            public_read,
            public_url: None,
            max_body: crate::config::DEFAULT_MAX_BODY,
            keep_runs: crate::config::DEFAULT_KEEP_RUNS,
            max_builds: crate::config::DEFAULT_MAX_BUILDS,
            read_timeout: crate::config::DEFAULT_READ_TIMEOUT,
        };
        let check = |server: &Server, given: &str, expected: Option<Access>| {
            let access = token_access(server, given).map(|(access, _)| access);
            assert_eq!(access, expected, "{given:?}");
        };
        let both = server(Some("operator"), Some("reader"), false);
        check(&both, "operator", Some(Access::Operate));
        check(&both, "reader", Some(Access::Read));
        check(&both, "stranger", None);
        check(&both, "", None);
        let read_only = server(None, Some("reader"), true);
        check(&read_only, "reader", Some(Access::Read));
        check(&read_only, "operator", None);
        // Whoever shows nothing may read only where reading is public.
        assert_eq!(anonymous_access(&both), None);
        assert_eq!(anonymous_access(&read_only), Some(Access::Read));
    }
}
