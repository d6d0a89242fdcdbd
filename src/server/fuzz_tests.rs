//! Property tests of the HTTP front: random requests through the router in-process,
//! with a real store and config (no socket, no Docker).
//!
//! Any method, path, query, headers and body get an answer and never a 5xx (the store
//! works here), and under `/api/` and `/hooks/` every 4xx is JSON with a message.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::sample::select;
use tower::ServiceExt;

use super::guard::MAX_HEADER_BYTES;
use super::tests::{Api, OPERATOR, READER};
use super::*;
use crate::fuzz;

/// One random request, as parts that always make a valid `http::Request`.
#[derive(Debug, Clone)]
struct RandomRequest {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Text for a path segment, a query value or a JSON string: plain, numeric, or anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(
            &[
                "app",
                "main",
                "nope",
                "0",
                "-1",
                "1",
                "9223372036854775808",
                "",
                "#1",
                "sha256:ab"
            ][..]
        )
        .prop_map(str::to_string),
        any::<i64>().prop_map(|number| number.to_string()),
        "[0-9a-f]{40}",
        ".{0,40}",
        "[ -~]{200,300}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    let segment = text().prop_map(|text| {
        form_urlencoded::byte_serialize(text.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    });
    let action = select(&["trigger", "deploy", "rollback", "pin", "unpin", "log", "x"][..]);
    (0..8usize, segment, action).prop_map(|(which, segment, action)| match which {
        0 => "/api/v1/pipelines".to_string(),
        1 => format!("/api/v1/pipelines/{segment}"),
        2 => format!("/api/v1/pipelines/{segment}/{action}"),
        3 => format!("/api/v1/pipelines/app/{action}"),
        4 => "/api/v1/runs".to_string(),
        5 => format!("/api/v1/runs/{segment}"),
        6 => format!("/api/v1/runs/{segment}/log"),
        _ => format!("/hooks/{segment}"),
    })
}

fn json_body() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        text().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    let key = select(&["commit", "image", "to", "reason", "other"][..]).prop_map(str::to_string);
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = RandomRequest> {
    let method = select(&["GET", "POST", "PUT", "DELETE"][..]);
    let query_key = select(&["limit", "before", "after", "state", "pipeline", "x"][..]);
    let query = proptest::collection::vec((query_key.prop_map(str::to_string), text()), 0..4);
    let authorization = prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {OPERATOR}"))),
        Just(Some(format!("Bearer {READER}"))),
        "[ -~]{0,60}".prop_map(Some),
    ];
    let content_type = prop_oneof![
        Just(None),
        select(
            &[
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
                "application/json; charset=utf-8"
            ][..]
        )
        .prop_map(|value| Some(value.to_string())),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let forge = proptest::option::of((
        select(
            &[
                "x-github-event",
                "x-gitlab-event",
                "x-event-key",
                "x-gitea-event",
            ][..],
        ),
        "[ -~]{0,20}",
    ));
    let body = prop_oneof![
        3 => json_body().prop_map(|json| json.to_string().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => (1usize..4).prop_map(|kib| vec![b'{'; (api::MAX_BODY / 1024 + kib) * 1024]),
    ];
    (
        method,
        path(),
        query,
        authorization,
        content_type,
        forge,
        body,
    )
        .prop_map(
            |(method, path, query, authorization, content_type, forge, body)| {
                let mut headers = Vec::new();
                if let Some(authorization) = authorization {
                    headers.push(("authorization", authorization));
                }
                if let Some(content_type) = content_type {
                    headers.push(("content-type", content_type));
                }
                if let Some((name, value)) = forge {
                    headers.push((name, value));
                }
                RandomRequest {
                    method,
                    path,
                    query,
                    headers,
                    body,
                }
            },
        )
}

fn build(random: &RandomRequest) -> Request<Body> {
    let mut uri = random.path.clone();
    if !random.query.is_empty() {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&random.query)
            .finish();
        uri = format!("{uri}?{query}");
    }
    let mut builder = Request::builder().method(random.method).uri(uri);
    for (name, value) in &random.headers {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::from(random.body.clone()))
        .expect("the parts are valid by construction")
}

#[test]
fn any_request_gets_an_answer_and_4xx_say_why_in_json() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = runtime.block_on(Api::new(""));
    // One router for every input, as the daemon has: building it per request cost more
    // than most requests do.
    let app = router(api.state.clone());
    fuzz::check("server::any_request", request(), |random| {
        let (status, text) = runtime.block_on(async {
            let response = app.clone().oneshot(build(&random)).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        });
        prop_assert!(!status.is_server_error(), "{status}: {text}");
        if status.is_client_error() {
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| TestCaseError::fail(format!("{status} is not JSON: {text:?}")))?;
            let message = json["error"].as_str().unwrap_or_default();
            prop_assert!(!message.is_empty(), "{status}: {text}");
        }
        Ok(())
    });
}

#[tokio::test]
async fn header_fields_past_the_limit_are_refused_with_431() {
    let api = Api::new("").await;
    let send = |size: usize| {
        let state = api.state.clone();
        async move {
            let request = Request::builder()
                .method("POST")
                .uri("/hooks/app")
                .header("x-github-event", "push")
                .header("x-padding", "p".repeat(size))
                .body(Body::from("{}"))
                .unwrap();
            let response = router(state).oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (status, text) = send(MAX_HEADER_BYTES).await;
    assert_eq!(
        status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{text}"
    );
    assert!(text.contains("more than the 32768 allowed"), "{text}");
    // Under the limit the delivery is judged on its signature.
    let (status, text) = send(MAX_HEADER_BYTES - 100).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
}

#[tokio::test]
async fn unknown_api_and_hook_paths_answer_404_in_json() {
    let api = Api::new("").await;
    for path in [
        "/api/v1/pipelines/app/log",
        "/api/v2",
        "/hooks/app/x",
        "/hooks/",
    ] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router(api.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(
            json["error"].as_str(),
            Some(format!("no endpoint GET {path}").as_str()),
            "{path}: {bytes:?}"
        );
    }
    // Pages stay pages.
    let request = Request::builder()
        .uri("/nothing/here")
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
