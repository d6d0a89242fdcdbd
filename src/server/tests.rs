//! The HTTP API in-process: the router with a real store and config, no socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::config::Config;
use crate::engine::reload::LiveConfig;
use crate::engine::scheduler;
use crate::run::{RunKind, RunState, Trigger};

pub(super) const OPERATOR: &str = "operator-token-1";
pub(super) const READER: &str = "reader-token-2";

pub(super) struct Api {
    _dir: tempfile::TempDir,
    pub(super) state: AppState,
}

impl Api {
    pub(super) async fn new(server: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(
            dir.path().join("gantry.yaml"),
            format!("server:\n  token: {OPERATOR}\n  read_token: {READER}\n{server}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pipelines/app.yaml"),
            "source: { repo: \"https://user:t0k3n@git.example.com/app.git\", branch: main, webhook: { secret: hook-s3cret } }\n\
             image: { repository: 127.0.0.1:5000/app }\n",
        )
        .unwrap();
        let config = Config::load_with(dir.path(), &|_: &str| None).unwrap();
        let store = Store::open(&crate::store::Location::of(&config))
            .await
            .unwrap();
        let (_sender, live) = watch::channel(LiveConfig {
            config: Arc::new(config),
            errors: vec!["pipelines/other.yaml:1:1: broken".to_string()],
        });
        let (events, _receiver) = scheduler::events();
        Api {
            _dir: dir,
            state: AppState::new(Shared {
                config: live,
                store,
                events,
                metrics: crate::engine::metrics::Metrics::new(),
                status: watch::channel(Arc::new(crate::engine::status::StatusSnapshot::default()))
                    .1,
                failed_auth: Arc::default(),
            }),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        status_and_text(response).await
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.call(method, path, token, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A run queued through the API's way in.
    async fn queued(&self) -> crate::run::RunId {
        self.state
            .store
            .queue_run(
                "app",
                RunKind::Run,
                &Trigger::Api,
                None,
                None,
                crate::store::no_answer(),
            )
            .await
            .unwrap()
            .unwrap()
    }

    /// A `POST` with the operator's token.
    async fn act(&self, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        self.json("POST", path, Some(OPERATOR), body).await
    }

    /// A `GET` with the read token.
    async fn read(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.json("GET", path, Some(READER), "").await
    }
}

async fn status_and_text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_endpoint_checks_its_token() {
    let api = Api::new("").await;
    for endpoint in api::endpoints() {
        let (method, path) = (endpoint.method, endpoint.path);
        let path = path.replace("{name}", "app").replace("{id}", "1");
        let method = method.to_uppercase();
        let (status, _) = api.call(&method, &path, None, "").await;
        let public = path.ends_with("openapi.json");
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            !public,
            "{method} {path} without a token"
        );
        let (status, body) = api.call(&method, &path, Some("wrong"), "").await;
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            !public,
            "{method} {path}: {body}"
        );
        let (status, body) = api.call(&method, &path, Some(READER), "").await;
        if method == "POST" {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
            assert!(body.contains("may only read"), "{body}");
        } else {
            assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn reads_may_be_opened_to_anonymous_readers_but_actions_never() {
    let api = Api::new("  public_read: true\n").await;
    let (status, _) = api.call("GET", "/api/v1/pipelines", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call("POST", "/api/v1/pipelines/app/trigger", None, "")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pipelines_show_state_and_config_errors_without_secrets() {
    let api = Api::new("").await;
    let (status, text) = api.call("GET", "/api/v1/pipelines", Some(READER), "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["pipelines"][0]["name"], "app");
    assert_eq!(
        body["pipelines"][0]["repo"],
        "https://git.example.com/app.git"
    );
    assert_eq!(body["pipelines"][0]["webhook"], true);
    assert_eq!(body["config_errors"][0], "pipelines/other.yaml:1:1: broken");
    for secret in ["t0k3n", "hook-s3cret", OPERATOR, READER] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let (status, body) = api.read("/api/v1/pipelines/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no pipeline `nope`");
}

#[tokio::test]
async fn actions_record_and_answer_with_the_run() {
    let api = Api::new("").await;
    let (status, body) = api
        .act("/api/v1/pipelines/app/trigger", r#"{"commit": "v1"}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["run"], 1);
    let (status, run) = api.read(&format!("/api/v1/runs/{}", body["run_id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["state"], "queued");
    assert_eq!(run["requested"], "v1");
    assert_eq!(run["trigger"], "api");
    let (status, body) = api
        .act("/api/v1/pipelines/app/pin", r#"{"reason": "freeze"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pinned"]["reason"], "freeze");
    let (_, pipeline) = api.read("/api/v1/pipelines/app").await;
    assert_eq!(pipeline["pinned"]["reason"], "freeze");
    assert_eq!(pipeline["last_run"]["number"], 1);
    let (_, body) = api.act("/api/v1/pipelines/app/unpin", "").await;
    assert_eq!(body["was_pinned"], true);
    let (status, _) = api
        .call("POST", "/api/v1/pipelines/nope/trigger", Some(OPERATOR), "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.act("/api/v1/pipelines/app/trigger", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // An action's body is a few short fields; a big one is refused before it is read.
    let big = format!(r#"{{"commit": "{}"}}"#, "a".repeat(api::MAX_BODY));
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/pipelines/app/trigger",
            Some(OPERATOR),
            &big,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, page) = api.read("/api/v1/runs").await;
    assert_eq!(
        page["runs"].as_array().unwrap().len(),
        1,
        "nothing more was queued: {page}"
    );
}

#[tokio::test]
async fn action_bodies_hold_known_fields_of_the_right_kind_only() {
    let api = Api::new("").await;
    let refused = [
        (
            "trigger",
            r#"{"comit": "v1"}"#,
            "unknown field `comit`, expected `commit`",
        ),
        (
            "trigger",
            r#"{"commit": 5}"#,
            "invalid type: integer `5`, expected a string",
        ),
        ("trigger", "[]", "expected"),
        ("trigger", r#"{"commit": "v1"} {}"#, "trailing characters"),
        (
            "deploy",
            r#"{"image": "sha256:zz"}"#,
            "is not an image reference",
        ),
        ("deploy", r#"{"image": "-rf"}"#, "is not an image reference"),
        (
            "deploy",
            r#"{"image": "app:v1", "force": true}"#,
            "unknown field `force`",
        ),
        (
            "rollback",
            r##"{"to": "#1", "wait": true}"##,
            "unknown field `wait`",
        ),
        (
            "pin",
            r#"{"reasn": "freeze"}"#,
            "unknown field `reasn`, expected `reason`",
        ),
    ];
    for (action, body, says) in refused {
        let path = format!("/api/v1/pipelines/app/{action}");
        let (status, answer) = api.act(&path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} {body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(says), "{action} {body}: {message}");
        assert!(!message.contains("Body"), "no type names: {message}");
    }
    let (_, page) = api.read("/api/v1/runs").await;
    assert_eq!(page["runs"], serde_json::json!([]), "nothing was queued");
    let (_, pipeline) = api.read("/api/v1/pipelines/app").await;
    assert!(pipeline["pinned"].is_null(), "{pipeline}");

    // The media type is matched as HTTP says: without regard to case, with parameters.
    let send = async |content_type: &str| {
        let request = Request::builder()
            .method("POST")
            .uri("/api/v1/pipelines/app/trigger")
            .header("authorization", format!("bearer {OPERATOR}"))
            .header("content-type", content_type)
            .body(Body::from(r#"{"commit": "v1"}"#))
            .unwrap();
        let response = router(api.state.clone()).oneshot(request).await.unwrap();
        status_and_text(response).await
    };
    let (status, text) = send("Application/JSON; charset=utf-8").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let (status, text) = send("text/plain").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert!(text.contains("application/json"), "{text}");
}

#[tokio::test]
async fn runs_come_a_page_at_a_time() {
    let api = Api::new("").await;
    for _ in 0..7 {
        api.queued().await;
    }
    let (_, first) = api.read("/api/v1/runs?limit=3").await;
    let numbers = |page: &serde_json::Value| -> Vec<i64> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["number"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(numbers(&first), vec![7, 6, 5]);
    let after =
        |page: &serde_json::Value| format!("/api/v1/runs?limit=3&before={}", page["next_before"]);
    let (_, second) = api.read(&after(&first)).await;
    assert_eq!(numbers(&second), vec![4, 3, 2]);
    let (_, last) = api.read(&after(&second)).await;
    assert_eq!(numbers(&last), vec![1]);
    assert!(last["next_before"].is_null());
    let (_, filtered) = api
        .read("/api/v1/runs?pipeline=app&state=queued&limit=2")
        .await;
    assert_eq!(numbers(&filtered), vec![7, 6]);
    let (_, none) = api.read("/api/v1/runs?state=succeeded").await;
    assert_eq!(numbers(&none), Vec::<i64>::new());
    // A page of no runs, or of a negative number, is a mistake, not a page of one.
    for limit in ["0", "-1", "x"] {
        let (status, answer) = api.read(&format!("/api/v1/runs?limit={limit}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limit}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("limit"),
            "{answer}"
        );
    }
    let (status, all) = api.read("/api/v1/runs?limit=100000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(numbers(&all).len(), 7);
    // Instances of a pipeline that is not configured: 404, as for the pipeline itself.
    let (status, answer) = api.read("/api/v1/instances?pipeline=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test]
async fn a_log_is_whole_as_json_and_followed_as_events_to_its_end() {
    let api = Api::new("").await;
    let run = api.queued().await;
    api.state.store.begin_run(run).await.unwrap();
    api.state
        .store
        .append_log(run.id, "[build] first")
        .await
        .unwrap();
    // A writer adds lines while a follower reads, then ends the run.
    let store = api.state.store.clone();
    let writer = tokio::spawn(async move {
        for index in 0..5 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            store
                .append_log(run.id, &format!("[build] line {index}"))
                .await
                .unwrap();
        }
        store.end_run(run, RunState::Failed, "done").await.unwrap();
    });
    let request = Request::builder()
        .uri(format!("/api/v1/runs/{}/log", run.id))
        .header("authorization", format!("Bearer {READER}"))
        .header("accept", "text/event-stream")
        .body(Body::empty())
        .unwrap();
    let response = router(api.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    writer.await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("data: {\"seq\""))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(text.contains("[build] line 4"), "{text}");
    assert!(
        text.contains("event: end\ndata: {\"state\":\"failed\"}"),
        "{text}"
    );
    let (_, whole) = api.read(&format!("/api/v1/runs/{}/log", run.id)).await;
    assert_eq!(whole["lines"].as_array().unwrap().len(), 6);
    assert_eq!(whole["state"], "failed");
}

#[tokio::test]
async fn metrics_count_deliveries_and_show_the_queue() {
    let api = Api::new("").await;
    let body =
        br#"{"ref": "refs/heads/main", "after": "0123456789012345678901234567890123456789"}"#;
    let signed = |secret: &str| {
        Request::builder()
            .method("POST")
            .uri("/hooks/app")
            .header("x-github-event", "push")
            .header(
                "x-hub-signature-256",
                crate::source::webhook::sign(secret.as_bytes(), body),
            )
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap()
    };
    for secret in ["hook-s3cret", "wrong", "wrong"] {
        router(api.state.clone())
            .oneshot(signed(secret))
            .await
            .unwrap();
    }
    let (status, text) = api.call("GET", "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(r#"gantry_webhook_deliveries_total{forge="github",result="queued"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gantry_webhook_deliveries_total{forge="github",result="unauthorized"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gantry_queue_depth{pipeline="app"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("gantry_process_resident_memory_bytes "),
        "{text}"
    );
    assert!(text.contains("# EOF"), "{text}");
}

impl Api {
    /// A dashboard request with a session cookie made by logging in with `token`.
    async fn page(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(token) = token {
            let login = router(self.state.clone())
                .oneshot(
                    Request::builder()
                        .method("POST")
                        .uri("/login")
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(Body::from(format!("token={token}&next=/")))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(login.status(), StatusCode::SEE_OTHER);
            let cookie = login.headers()["set-cookie"].to_str().unwrap();
            let session = cookie.split(';').next().unwrap().to_string();
            request = request.header("cookie", session);
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        status_and_text(response).await
    }
}

#[tokio::test]
async fn the_dashboard_escapes_what_a_commit_says_and_hides_the_repository_password() {
    let api = Api::new("").await;
    let run = api
        .state
        .store
        .start_run(
            "app",
            RunKind::Run,
            &Trigger::Webhook {
                forge: "github".into(),
                delivery: None,
            },
            None,
        )
        .await
        .unwrap();
    api.state
        .store
        .set_commit(
            run,
            "0123456789abcdef0123456789abcdef01234567",
            Some(crate::store::CommitDetails {
                subject: "<script>alert('owned')</script> & \"quotes\"",
                author: "<img src=x onerror=alert(1)>",
            }),
        )
        .await
        .unwrap();
    api.state
        .store
        .append_log(run.id, "[build] <b>bold</b>")
        .await
        .unwrap();
    for path in [
        "/".to_string(),
        "/pipelines/app".to_string(),
        format!("/runs/{}", run.id),
    ] {
        let (status, page) = api.page(&path, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(!page.contains("<img src=x"), "{path}: {page}");
        assert!(page.contains("&#60;script&#62;alert("), "{path}: {page}");
        assert!(!page.contains("t0k3n"), "{path}: {page}");
        assert!(!page.contains("hook-s3cret"), "{path}: {page}");
    }
    let (_, page) = api.page(&format!("/runs/{}", run.id), Some(READER)).await;
    assert!(page.contains("&#60;b&#62;bold&#60;/b&#62;"), "{page}");
    // The home page shows the config errors; the pipeline page the redacted repository.
    let (_, page) = api.page("/", Some(READER)).await;
    assert!(page.contains("pipelines/other.yaml:1:1: broken"), "{page}");
    let (_, page) = api.page("/pipelines/app", Some(READER)).await;
    assert!(page.contains("git.example.com/app.git"), "{page}");
    // Without a session: to the login page; a stale cookie counts for nothing.
    let (status, _) = api.page("/", None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let response = router(api.state.clone())
        .oneshot(
            Request::builder()
                .uri("/")
                .header("cookie", format!("gantry_session={}", "0".repeat(64)))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}
