//! Answering a registry's `401` for the HTTP API (the manifest checks): HTTP Basic with
//! a user and password, or a bearer token from the registry's token service.
//!
//! The token service is asked as Docker asks it: with a user and password, by `GET
//! realm?service=…&scope=…` with HTTP Basic (Docker's token protocol); with an identity
//! token, by `POST realm` of an OAuth2 refresh-token grant (Docker's OAuth2 token
//! protocol), which is what an identity token is for. A registry that wants HTTP Basic
//! cannot take an identity token, and is told so. Pushes and pulls do not come here: the
//! engine answers the registry itself, with the credentials gantry hands it.

use secrecy::ExposeSecret;

use super::{Credentials, REGISTRY_TIMEOUT, error_chain};

/// The OAuth2 client id gantry gives a token service, which some of them require.
const CLIENT_ID: &str = "gantry";

/// What a `WWW-Authenticate` header asks for.
#[derive(Debug, PartialEq)]
enum Challenge {
    /// HTTP Basic, or no scheme gantry knows: a user and password are sent as Basic.
    Basic,
    /// A token from the service at `realm`, for these parameters (`service`, `scope`).
    Bearer {
        realm: String,
        parameters: Vec<(String, String)>,
    },
}

/// The `Authorization` header that answers `challenge` with `credentials`.
pub(super) async fn authorization(
    client: &reqwest::Client,
    challenge: &str,
    credentials: &Credentials,
) -> Result<String, String> {
    let token = match (read_challenge(challenge)?, credentials) {
        (Challenge::Basic, Credentials::Password { username, password }) => {
            return Ok(basic(username, password.expose_secret()));
        }
        (Challenge::Basic, Credentials::IdentityToken { .. }) => {
            return Err(
                "the registry asks for a user and password (HTTP Basic), and the Docker config \
                 holds only an identity token for it"
                    .to_string(),
            );
        }
        (Challenge::Bearer { realm, parameters }, Credentials::Password { username, password }) => {
            client
                .get(&realm)
                .timeout(REGISTRY_TIMEOUT)
                .query(&parameters)
                .header("Authorization", basic(username, password.expose_secret()))
                .send()
                .await
        }
        (Challenge::Bearer { realm, parameters }, Credentials::IdentityToken { token }) => {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(refresh_grant(&parameters))
                .append_pair("refresh_token", token.expose_secret())
                .finish();
            client
                .post(&realm)
                .timeout(REGISTRY_TIMEOUT)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        }
    }
    .map_err(|error| format!("the token service: {}", error_chain(&error)))?;
    if !token.status().is_success() {
        return Err(format!("the token service answered {}", token.status()));
    }
    let body: serde_json::Value = token
        .json()
        .await
        .map_err(|error| format!("the token service: {}", error_chain(&error)))?;
    body.get("token")
        .or_else(|| body.get("access_token"))
        .and_then(|token| token.as_str())
        .map(|token| format!("Bearer {token}"))
        .ok_or_else(|| "the token service sent no token".to_string())
}

fn basic(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn read_challenge(header: &str) -> Result<Challenge, String> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Challenge::Basic);
    }
    let mut parameters = challenge_parameters(rest);
    let realm = parameters
        .iter()
        .position(|(key, _)| key == "realm")
        .map(|index| parameters.remove(index).1)
        .ok_or("the registry's Bearer challenge names no realm")?;
    Ok(Challenge::Bearer { realm, parameters })
}

/// `key="value", key=value` pairs, keys lowercased; quoted values may hold commas
/// (`scope="repository:team/app:pull,push"`) and backslash escapes.
fn challenge_parameters(text: &str) -> Vec<(String, String)> {
    let mut parameters = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.trim().is_empty() {
            return parameters;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        parameters.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// The form of an OAuth2 refresh-token grant for the challenge's parameters, without
/// the token itself (added by the caller, so that this stays printable).
fn refresh_grant(parameters: &[(String, String)]) -> Vec<(String, String)> {
    let mut form = vec![("grant_type".to_string(), "refresh_token".to_string())];
    form.extend(
        parameters
            .iter()
            .filter(|(key, _)| key == "service" || key == "scope")
            .cloned(),
    );
    form.push(("client_id".to_string(), CLIENT_ID.to_string()));
    form
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn check(header: &str, expected: Result<Challenge, &str>) {
        assert_eq!(
            read_challenge(header),
            expected.map_err(str::to_string),
            "{header}"
        );
    }

    #[test]
    fn challenges_are_read_with_quoted_commas() {
        check("Basic realm=\"Registry Realm\"", Ok(Challenge::Basic));
        check("", Ok(Challenge::Basic));
        check(
            "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:team/app:pull,push\"",
            Ok(Challenge::Bearer {
                realm: "https://auth.example.com/token".to_string(),
                parameters: pairs(&[
                    ("service", "registry.example.com"),
                    ("scope", "repository:team/app:pull,push"),
                ]),
            }),
        );
        check(
            "bearer Realm=https://auth.example.com/token, error=\"a \\\"quoted\\\" word\"",
            Ok(Challenge::Bearer {
                realm: "https://auth.example.com/token".to_string(),
                parameters: pairs(&[("error", "a \"quoted\" word")]),
            }),
        );
        check(
            "Bearer service=\"x\"",
            Err("the registry's Bearer challenge names no realm"),
        );
    }

    #[test]
    fn an_identity_token_is_sent_as_a_refresh_grant() {
        let parameters = pairs(&[
            ("service", "registry.example.com"),
            ("scope", "repository:team/app:pull"),
            ("error", "invalid_token"),
        ]);
        assert_eq!(
            refresh_grant(&parameters),
            pairs(&[
                ("grant_type", "refresh_token"),
                ("service", "registry.example.com"),
                ("scope", "repository:team/app:pull"),
                ("client_id", "gantry"),
            ])
        );
    }

    #[test]
    fn a_password_is_sent_as_http_basic() {
        // "ci:pw" in base64.
        assert_eq!(basic("ci", "pw"), "Basic Y2k6cHc=");
    }
}
