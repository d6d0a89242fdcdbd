//! Who is looking: sessions (an HMAC of level and issue time under the token, in a
//! cookie), the viewer they make, and logging in and out.

use super::*;

// ---------------------------------------------------------------- sessions

pub(super) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// An HMAC of `purpose` under the token: what a cookie or a form carries instead of it.
pub(super) fn derived(token: &SecretString, purpose: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(token.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"gantry dashboard ");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub(super) fn same(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// What a session may do, as its cookie names it.
pub(super) const OPERATE: &str = "operate";
pub(super) const READ: &str = "read";

/// The level a session cookie names for `access`.
pub(super) fn level(access: Access) -> &'static str {
    match access {
        Access::Operate => OPERATE,
        Access::Read => READ,
    }
}

/// A session cookie's value: `LEVEL.ISSUED.MAC`, the MAC an HMAC under the token of the
/// level and the issue time (seconds since the epoch).
pub(super) fn session_value(token: &SecretString, level: &str, issued: u64) -> String {
    let mac = derived(token, &format!("session {level} {issued}"));
    format!("{level}.{issued}.{mac}")
}

/// True when `value` is a session of `level` under `token` that has not expired.
pub(super) fn is_session(value: &str, token: &SecretString, level: &str, now: u64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some(given_level), Some(issued), Some(_)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(issued) = issued.parse::<u64>() else {
        return false;
    };
    let fresh = issued <= now + 60 && now.saturating_sub(issued) <= SESSION_DAYS * 86_400;
    given_level == level && fresh && same(value, &session_value(token, level, issued))
}

pub(super) fn now_seconds() -> u64 {
    u64::try_from(now_millis() / 1000).unwrap_or_default()
}

/// Who is looking, and what they may do.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    pub(super) access: Access,
    /// True for a login; false for an anonymous reader (`server.public_read`).
    pub(super) logged_in: bool,
    /// The form key an action must carry; only an operator has one.
    pub(super) form_key: Option<String>,
}

impl Viewer {
    pub(super) fn may_operate(&self) -> bool {
        self.access == Access::Operate
    }
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The viewer the request's session cookie (or the public-read setting) makes.
pub(super) fn viewer(state: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    let server = state.config.borrow().config.server.clone();
    let now = now_seconds();
    let session = cookie(headers, SESSION_COOKIE).and_then(|session| {
        granted(&server, |token, access| {
            is_session(session, token, level(access), now)
        })
        .map(|(access, token)| Viewer {
            access,
            logged_in: true,
            // Only an operator acts, so only an operator's forms carry a key.
            form_key: (access == Access::Operate)
                .then(|| derived(token, &format!("form {session}"))),
        })
    });
    session.or_else(|| anonymous_access(&server).map(|_| anonymous()))
}

/// A page's answer when nobody may read it: off to the login page, then back.
pub(super) fn to_login(path: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// Only a path on this server may follow a login: it starts with one `/`, and holds
/// no space, control character (browsers drop tabs, so `/\t/host` is `//host`) or
/// backslash.
pub(super) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && next.bytes().all(|byte| byte.is_ascii_graphic()) =>
        {
            next
        }
        _ => "/",
    }
}

// ---------------------------------------------------------------- login

#[derive(Debug, Deserialize)]
pub(super) struct NextPage {
    pub(super) next: Option<String>,
}

pub(super) fn anonymous() -> Viewer {
    Viewer {
        access: Access::Read,
        logged_in: false,
        form_key: None,
    }
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    Query(next): Query<NextPage>,
) -> Response {
    let server = state.config.borrow().config.server.clone();
    page(&LoginPage {
        layout: Layout::new("Log in", &anonymous(), 0),
        next: safe_next(next.next.as_deref()).to_string(),
        problem: String::new(),
        no_token: server.token.is_none() && server.read_token.is_none(),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    pub(super) token: String,
    pub(super) next: Option<String>,
}

pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let server = state.config.borrow().config.server.clone();
    let given = form.token.trim();
    let now = now_seconds();
    let session = token_access(&server, given)
        .map(|(access, token)| session_value(token, level(access), now));
    let next = safe_next(form.next.as_deref()).to_string();
    let Some(session) = session else {
        let mut response = page(&LoginPage {
            layout: Layout::new("Log in", &anonymous(), 0),
            next,
            problem: "That token is not valid.".to_string(),
            no_token: server.token.is_none() && server.read_token.is_none(),
        });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    };
    // Over https (directly, or behind a proxy that says so) the cookie is never sent in the clear.
    let https = server
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_DAYS * 86_400,
        if https { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Removes the cookie from this browser. (A session is not stored on the server: a copy
/// taken elsewhere stays valid until it expires or the token changes.)
pub(super) async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gantry_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
