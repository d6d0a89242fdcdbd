//! The dashboard of the real `gantry serve`: in a real headless Chromium (Debian's
//! package, installed by scripts/test-env.sh), and read without JavaScript by curl.
//! Screenshots of every page go to `target/test-artifacts/dashboard/` (or
//! `$GANTRY_TEST_ARTIFACTS/dashboard/`).

use std::path::PathBuf;
use std::time::Duration;

use headless_chrome::protocol::cdp::Emulation;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use crate::common::*;

const OPERATOR: &str = "dash-operator-t0ken";
const READER: &str = "dash-reader-t0ken";

/// Adds both tokens (and `extra` server keys) to the deployment's gantry.yaml.
fn with_tokens<'a>(deployment: &'a Deployment, extra: &str) -> ServerSection<'a> {
    let section = ServerSection {
        deployment,
        text: format!("server:\n  token: {OPERATOR}\n  read_token: {READER}\n{extra}"),
    };
    section.write();
    section
}

/// The `server:` section of a deployment's gantry.yaml, as written.
struct ServerSection<'a> {
    deployment: &'a Deployment,
    text: String,
}

impl ServerSection<'_> {
    fn write(&self) {
        let path = self.deployment.config.path().join("gantry.yaml");
        let mut gantry_yaml = std::fs::read_to_string(&path).unwrap();
        if let Some(start) = gantry_yaml.find("server:\n") {
            gantry_yaml.truncate(start);
        }
        gantry_yaml.push_str(&self.text);
        self.deployment.config.write("gantry.yaml", &gantry_yaml);
    }

    /// Writes the section again with another read token.
    fn replace_reader(mut self, token: &str) {
        self.text = self.text.replace(READER, token);
        self.write();
    }
}

/// Where screenshots are saved.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("GANTRY_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"))
        .join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Debian's Chromium, headless, with a window of this size. No sandbox: tests run as root.
fn browser(width: u32, height: u32) -> Browser {
    Browser::new(LaunchOptions {
        path: Some(PathBuf::from("/usr/bin/chromium")),
        sandbox: false,
        window_size: Some((width, height)),
        idle_browser_timeout: Duration::from_secs(300),
        ..LaunchOptions::default()
    })
    .expect("Chromium starts (scripts/test-env.sh installs it)")
}

fn eval(tab: &Tab, expression: &str) -> Value {
    tab.evaluate(expression, false)
        .unwrap()
        .value
        .unwrap_or(Value::Null)
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        _ => true,
    }
}

/// Evaluates `expression` until it is truthy; returns its value.
fn wait_for(tab: &Tab, what: &str, expression: &str, timeout: Duration) -> Value {
    eventually(what, timeout, || {
        let value = eval(tab, expression);
        if truthy(&value) {
            Ok(value)
        } else {
            Err(format!(
                "still {value} at {}; the page says:\n{}",
                tab.get_url(),
                text_of(tab, "body")
            ))
        }
    })
}

/// Opens `url` and waits until the page (and its script) has loaded.
fn open(tab: &Tab, url: &str) {
    tab.navigate_to(url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        tab,
        "the page loads",
        "document.readyState === 'complete'",
        Duration::from_secs(30),
    );
}

/// Clicks what `selector` finds and waits for the page to change to one whose
/// address contains `to`.
fn click_to(tab: &Tab, selector: &str, to: &str) {
    let before = tab.get_url();
    tab.wait_for_element(selector).unwrap();
    // The DOM's own click: a link follows, a submit button submits its form.
    let click = format!(
        "document.querySelector({}).click()",
        serde_json::to_string(selector).unwrap()
    );
    eval(tab, &click);
    eventually(
        &format!("clicking {selector} leads to {to}"),
        Duration::from_secs(30),
        || {
            let url = tab.get_url();
            if url != before && url.contains(to) && eval(tab, "document.readyState") == "complete" {
                Ok(())
            } else {
                Err(format!("at {url}"))
            }
        },
    );
}

fn text_of(tab: &Tab, selector: &str) -> String {
    let expression = format!(
        "(document.querySelector({}) || {{ innerText: '' }}).innerText",
        serde_json::to_string(selector).unwrap()
    );
    eval(tab, &expression).as_str().unwrap_or("").to_string()
}

fn log_in(tab: &Tab, base: &str, token: &str) {
    open(tab, &format!("{base}/login"));
    tab.wait_for_element("#token").unwrap().click().unwrap();
    tab.type_str(token).unwrap();
    click_to(tab, "#login button[type=submit]", base);
}

/// A Dockerfile whose build writes a line every 300 ms, so the log visibly grows.
fn chatty_dockerfile(marker: &str) -> String {
    format!(
        "FROM gantry-test/busybox:latest\n\
         RUN for i in $(seq 1 20); do echo \"{marker} step $i\"; sleep 0.3; done\n\
         COPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

#[test]
fn dashboard_in_a_browser_shows_a_triggered_run_and_follows_its_log_live() {
    let deployment = webhook_deployment("dash", "");
    with_tokens(&deployment, "");
    let marker = unique("slow");
    deployment
        .repo
        .write("Dockerfile", &chatty_dockerfile(&marker));
    let head = deployment.repo.commit("Slow build for the dashboard");
    let daemon = Daemon::start(&deployment.config);
    let base = daemon.url("");
    let name = &deployment.name;
    let browser = browser(1280, 900);
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(30));

    // Nothing is shown before logging in.
    open(&tab, &format!("{base}/"));
    assert!(tab.get_url().contains("/login?next="), "{}", tab.get_url());
    screenshot(&tab, "login");
    log_in(&tab, &base, OPERATOR);
    let row = format!("#pipelines tr[data-pipeline=\"{name}\"]");
    assert!(
        text_of(&tab, &row).contains("no run yet"),
        "{}",
        text_of(&tab, &row)
    );

    // A second tab keeps the pipeline list open; it must follow the run by itself.
    let home = browser.new_tab().unwrap();
    open(&home, &format!("{base}/"));
    eval(&home, "window.stayed = true");

    // Run the pipeline from its page, through the confirmation.
    tab.activate().unwrap();
    open(&tab, &format!("{base}/pipelines/{name}"));
    click_to(&tab, "#actions a[href$=\"/trigger\"]", "/trigger");
    screenshot(&tab, "confirm");
    click_to(&tab, "#confirm button[type=submit]", "/runs/");
    eval(&tab, "window.stayed = true");

    // The log grows while the build runs, through the page's event stream.
    let count = "document.querySelectorAll('#log .line').length";
    let streaming = format!(
        "Number(document.getElementById('log').dataset.streamed || 0) > 0 \
         && document.getElementById('run-state').innerText === 'running' && {count}"
    );
    // Generous: twice in full-suite runs beside the kill -9 campaign the daemon's run
    // stayed queued, or its status unread, for over a minute (a failure now prints the
    // daemon's log, to tell why).
    let first = wait_for(&tab, "streamed lines", &streaming, Duration::from_secs(180));
    let first = first.as_u64().unwrap();
    let grown = format!(
        "document.getElementById('run-state').innerText === 'running' && {count} > {first} && {count}"
    );
    let later = wait_for(
        &tab,
        "the log grows while the run is running",
        &grown,
        Duration::from_secs(30),
    );
    assert!(later.as_u64().unwrap() > first);
    screenshot(&tab, "run-live");

    // The run ends; the page says so without being reloaded.
    wait_for(
        &tab,
        "the run page shows the run succeeded",
        "document.getElementById('run-state').innerText === 'succeeded'",
        Duration::from_secs(120),
    );
    assert_eq!(eval(&tab, "window.stayed"), Value::Bool(true), "no reload");
    let log = text_of(&tab, "#log");
    assert!(log.contains(&format!("{marker} step 20")), "{log}");
    assert!(log.contains("[deploy]"), "{log}");
    let streamed = eval(
        &tab,
        "Number(document.getElementById('log').dataset.streamed)",
    );
    assert!(streamed.as_u64().unwrap() >= 20, "{streamed}");
    screenshot(&tab, "run");

    // The open pipeline list catches up by itself once in view: last run, commit,
    // message, author.
    home.activate().unwrap();
    assert_eq!(eval(&tab, "document.hidden"), Value::Bool(true));
    wait_for(
        &home,
        "the open pipeline list shows the finished run",
        &format!(
            "(document.querySelector({}) || {{ innerText: '' }}).innerText.includes('succeeded')",
            serde_json::to_string(&row).unwrap()
        ),
        Duration::from_secs(15),
    );
    assert_eq!(eval(&home, "window.stayed"), Value::Bool(true), "no reload");
    let listed = text_of(&home, &row);
    for part in [
        "#1",
        &head[..8],
        "Slow build for the dashboard",
        "Test",
        "run",
    ] {
        assert!(listed.contains(part), "`{part}` in {listed}");
    }
    assert!(
        listed.contains(" s") || listed.contains("ms"),
        "a duration: {listed}"
    );
    assert!(
        listed.contains("ago") || listed.contains("just now"),
        "an age: {listed}"
    );
    screenshot(&home, "home");
    // Only the visible tab refreshes itself; bring the first one back.
    tab.activate().unwrap();
    wait_for(
        &home,
        "a tab out of view is hidden",
        "document.hidden",
        Duration::from_secs(10),
    );
    home.close(true).unwrap();

    // The pipeline page shows the instance the daemon read on its host.
    open(&tab, &format!("{base}/pipelines/{name}"));
    let instance = deployment.instance("web-1");
    let instance_row = format!("tr[data-instance=\"{instance}\"]");
    // The daemon reads its hosts every 5 s and at each run's end; with the whole suite
    // on the engine one reading once took 39 s.
    wait_for(
        &tab,
        "the instance shows as running",
        &format!(
            "(document.querySelector({}) || {{ innerText: '' }}).innerText.includes('running')",
            serde_json::to_string(&instance_row).unwrap()
        ),
        Duration::from_secs(90),
    );
    let instance_text = text_of(&tab, &instance_row);
    assert!(instance_text.contains(&head[..8]), "{instance_text}");
    assert!(text_of(&tab, ".host h3").contains("local"));
    screenshot(&tab, "pipeline");
    let run_url = format!("{base}/runs/{}", runs(&deployment)[0]["id"]);

    // On a phone (390 × 844 CSS pixels, mobile) no page is wider than the screen.
    let phone = self::browser(390, 844);
    let small = phone.new_tab().unwrap();
    small
        .call_method(Emulation::SetDeviceMetricsOverride {
            width: 390,
            height: 844,
            device_scale_factor: 2.0,
            mobile: true,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })
        .unwrap();
    log_in(&small, &base, OPERATOR);
    for (page, url) in [
        ("home", format!("{base}/")),
        ("pipeline", format!("{base}/pipelines/{name}")),
        ("run", run_url),
        ("confirm", format!("{base}/pipelines/{name}/rollback")),
    ] {
        open(&small, &url);
        let fits = eval(
            &small,
            "document.documentElement.scrollWidth <= window.innerWidth",
        );
        let widths = eval(
            &small,
            "[document.documentElement.scrollWidth, window.innerWidth]",
        );
        assert_eq!(
            fits,
            Value::Bool(true),
            "{page} is wider than the phone: {widths}"
        );
        screenshot(&small, &format!("phone-{page}"));
    }
    assert_eq!(deployed_commit(&deployment), head);
}

fn location(answer: &str) -> String {
    answer
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

/// Waits for the newest run to end; returns it.
fn newest_finished(deployment: &Deployment, daemon: &Daemon, count: usize) -> Value {
    wait_idle(deployment, daemon, count)[0].clone()
}

#[test]
fn dashboard_pages_read_without_javascript_and_every_action_needs_the_operator() {
    let deployment = webhook_deployment("dashform", "");
    with_tokens(&deployment, "");
    let first = deployment.head();
    let daemon = Daemon::start(&deployment.config);
    let name = deployment.name.clone();

    // Anonymous: every page sends to the login page, and comes back after it.
    let stranger = Visitor::new(&daemon);
    for path in [
        "/".to_string(),
        format!("/pipelines/{name}"),
        "/runs/1".to_string(),
        format!("/pipelines/{name}/trigger"),
    ] {
        let (status, answer) = stranger.get(&path);
        assert_eq!(status, 303, "{path}: {answer}");
        assert!(location(&answer).starts_with("/login?next="), "{answer}");
    }
    let (status, answer) =
        stranger.post(&format!("/pipelines/{name}/trigger"), &[("form_key", "x")]);
    assert_eq!(status, 303, "{answer}");
    let (status, answer) = stranger.log_in("not-the-token", "/");
    assert_eq!(status, 401);
    assert!(answer.contains("That token is not valid."), "{answer}");
    let (status, _) = stranger.post("/login", &[("token", &"x".repeat(100_000))]);
    assert_eq!(status, 413, "a form over 64 KiB is refused");

    // A reader sees everything and can do nothing.
    let reader = Visitor::new(&daemon);
    let (status, answer) = reader.log_in(READER, &format!("/pipelines/{name}"));
    assert_eq!(status, 303, "{answer}");
    assert_eq!(location(&answer), format!("/pipelines/{name}"));
    let cookie = answer
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(READER),
        "the cookie holds no token: {cookie}"
    );
    let (status, page) = reader.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains(&name) && page.contains("no run yet"),
        "{page}"
    );
    assert!(page.contains(">reader<"), "{page}");
    let (status, page) = reader.get(&format!("/pipelines/{name}"));
    assert_eq!(status, 200);
    assert!(!page.contains("id=\"actions\""), "{page}");
    let (status, page) = reader.get(&format!("/pipelines/{name}/trigger"));
    assert_eq!(status, 403);
    assert!(page.contains("Operators only"), "{page}");
    let (status, _) = reader.post(&format!("/pipelines/{name}/trigger"), &[("form_key", "")]);
    assert_eq!(status, 403);

    // The operator: each action behind a confirmation that carries the form key.
    let operator = Visitor::new(&daemon);
    assert_eq!(operator.log_in(OPERATOR, "/").0, 303);
    let (status, page) = operator.get(&format!("/pipelines/{name}/trigger"));
    assert_eq!(status, 200);
    assert!(page.contains(&format!("Run {name} now?")), "{page}");
    let (status, page) = operator.post(
        &format!("/pipelines/{name}/trigger"),
        &[("form_key", "forged")],
    );
    assert_eq!(status, 403, "{page}");
    assert!(runs(&deployment).is_empty(), "a forged form queues nothing");
    let (status, answer) = operator.act(&name, "trigger", &[("commit", "")]);
    assert_eq!(status, 303, "{answer}");
    let run_page = location(&answer);
    assert!(run_page.starts_with("/runs/"), "{answer}");
    let run = newest_finished(&deployment, &daemon, 1);
    assert_eq!(run["state"], "succeeded", "{run}\n{}", daemon.log());
    assert_eq!(run["trigger"], "dashboard");
    assert_eq!(run_page, format!("/runs/{}", run["id"]));

    // The finished run's page, as plain HTML: state, commit, stages and the whole log.
    let (status, page) = operator.get(&run_page);
    assert_eq!(status, 200);
    for part in [
        "id=\"run-state\">succeeded",
        &first[..8],
        "<span class=\"line\"",
        "[build]",
        "[deploy]",
        "id=\"stages\"",
    ] {
        assert!(page.contains(part), "`{part}` in {page}");
    }

    // The page's own refresh asks for the live part only: no log.
    let (status, live) = operator.get(&format!("{run_page}?live=1"));
    assert_eq!(status, 200);
    assert!(live.contains("id=\"run-state\">succeeded"), "{live}");
    assert!(!live.contains("<span class=\"line\""), "{live}");
    let (status, text) = operator.get(&format!("{run_page}/log.txt"));
    assert_eq!(status, 200);
    assert!(
        text.contains("text/plain") && text.contains("[deploy] "),
        "{text}"
    );
    assert_eq!(stranger.get(&format!("{run_page}/log.txt")).0, 303);

    // A second version, then a rollback: it pins the pipeline, and unpin lifts it.
    deployment.repo.write("www/index.html", "v2\n");
    let second = deployment.repo.commit("Second version");
    assert_eq!(operator.act(&name, "trigger", &[]).0, 303);
    let run = newest_finished(&deployment, &daemon, 2);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(deployed_commit(&deployment), second);
    let (_, page) = operator.get("/");
    assert!(page.contains("Second version"), "{page}");
    let (status, answer) = operator.act(&name, "rollback", &[("to", "")]);
    assert_eq!(status, 303, "{answer}");
    let run = newest_finished(&deployment, &daemon, 3);
    assert_eq!(run["kind"], "rollback");
    assert_eq!(run["state"], "succeeded", "{run}\n{}", daemon.log());
    assert_eq!(deployed_commit(&deployment), first);
    let (_, page) = operator.get(&format!("/pipelines/{name}"));
    assert!(page.contains("badge pinned"), "{page}");
    assert!(page.contains(&format!("/pipelines/{name}/unpin")), "{page}");
    let (status, answer) = operator.act(&name, "unpin", &[]);
    assert_eq!(status, 303);
    assert_eq!(location(&answer), format!("/pipelines/{name}"));
    let (_, page) = operator.get(&format!("/pipelines/{name}"));
    assert!(!page.contains("badge pinned"), "{page}");
    let tag = format!("{}:{}", deployment.repository, &second[..7]);
    assert_eq!(operator.act(&name, "deploy", &[("image", &tag)]).0, 303);
    let run = newest_finished(&deployment, &daemon, 4);
    assert_eq!(run["kind"], "deploy");
    assert_eq!(run["state"], "succeeded", "{run}\n{}", daemon.log());
    assert_eq!(deployed_commit(&deployment), second);
    // A deploy is listed with the commit it deployed.
    let (_, page) = operator.get(&format!("/runs/{}", run["id"]));
    assert!(page.contains("Second version"), "{page}");

    // Unknown things are a page that says so.
    assert_eq!(operator.get("/runs/999999").0, 404);
    assert_eq!(operator.get("/pipelines/nope").0, 404);
    assert_eq!(operator.get(&format!("/pipelines/{name}/explode")).0, 404);

    // Embedded assets, nothing from elsewhere.
    let (status, css) = operator.get("/assets/app.css");
    assert_eq!(status, 200);
    assert!(
        css.to_ascii_lowercase().contains("content-type: text/css"),
        "{css}"
    );
    assert_eq!(operator.get("/assets/app.js").0, 200);
    assert_eq!(operator.get("/assets/none.js").0, 404);
    for path in [
        "/".to_string(),
        format!("/pipelines/{name}"),
        run_page.clone(),
    ] {
        let (_, page) = operator.get(&path);
        assert!(
            !page.contains("src=\"http") && !page.contains("href=\"http"),
            "{path} loads nothing from elsewhere"
        );
        assert!(!page.contains(OPERATOR) && !page.contains(READER), "{path}");
    }

    // A broken pipeline file shows on the home page, with where it broke.
    deployment
        .config
        .write("pipelines/broken.yaml", "source:\n  repo: x\n  bogus: 1\n");
    let page = eventually("the config error shows", Duration::from_secs(20), || {
        let (_, page) = operator.get("/");
        if page.contains("Configuration errors") {
            Ok(page)
        } else {
            Err(page)
        }
    });
    assert!(page.contains("broken.yaml:"), "{page}");
    std::fs::remove_file(deployment.config.path().join("pipelines/broken.yaml")).unwrap();

    // Logging out removes the cookie from this browser.
    let (status, answer) = operator.post("/logout", &[]);
    assert_eq!(status, 303);
    assert!(answer.contains("Max-Age=0"), "{answer}");
    assert_eq!(operator.get("/").0, 303);

    // A new token ends the sessions made with the old one, on the server's side.
    assert_eq!(reader.get("/").0, 200);
    with_tokens(&deployment, "").replace_reader("rotated-reader-t0ken");
    eventually(
        "the old reader session ends",
        Duration::from_secs(20),
        || match reader.get("/") {
            (303, _) => Ok(()),
            (status, page) => Err(format!("HTTP {status}: {page}")),
        },
    );
    assert_eq!(reader.log_in(READER, "/").0, 401);
    assert_eq!(reader.log_in("rotated-reader-t0ken", "/").0, 303);
    assert_eq!(reader.get("/").0, 200);

    // With public_read, anyone reads (and still cannot act).
    with_tokens(&deployment, "  public_read: true\n");
    eventually(
        "public_read applies on reload",
        Duration::from_secs(20),
        || match stranger.get("/") {
            (200, _) => Ok(()),
            (status, page) => Err(format!("HTTP {status}: {page}")),
        },
    );
    let (_, page) = stranger.get("/");
    assert!(page.contains("href=\"/login\""), "{page}");
    assert_eq!(stranger.get(&format!("/pipelines/{name}/rollback")).0, 403);
}
