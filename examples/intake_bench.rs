//! Load generator for `gantry serve`'s webhook intake (scripts/bench-intake.sh runs it).
//!
//! Sends exactly `--warmup` (not counted) and then `--deliveries` signed generic
//! deliveries (`X-Gantry-Signature-256`, a unique `X-Gantry-Delivery` each) to one
//! `POST /hooks/PIPELINE` URL from `--concurrency` tasks over one keep-alive client,
//! times each request until its whole answer is read, and prints one JSON summary on
//! stdout. By default each task sends its next delivery as soon as the last is answered
//! (a closed loop: what the daemon can take). With `--rate N` delivery i is due at
//! i/N s after the start whatever the answers before it (an open loop: how a forge's
//! pushes arrive), and its latency counts from when it was due, so a stall that keeps
//! deliveries from being sent counts against every one of them. Exits 1 when any
//! measured or warm-up request failed or was not answered 202.
//!
//!   cargo run --release --example intake_bench -- --url http://127.0.0.1:8700/hooks/NAME \
//!     --secret SECRET --commit SHA [--deliveries 10000] [--concurrency 32] [--warmup 200] \
//!     [--rate 5000]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    about = "Floods gantry's webhook intake with signed deliveries and reports throughput and latency"
)]
struct Args {
    /// The hook URL: http://127.0.0.1:PORT/hooks/PIPELINE. Given several times (one
    /// per replica), deliveries go to each in turn.
    #[arg(long, required = true)]
    url: Vec<String>,
    /// The pipeline's `source.webhook.secret`.
    #[arg(long)]
    secret: String,
    /// The commit id every delivery names as `after` (40 hex digits).
    #[arg(long)]
    commit: String,
    /// The pushed ref.
    #[arg(long = "ref", default_value = "refs/heads/main")]
    git_ref: String,
    /// Measured deliveries.
    #[arg(long, default_value_t = 10_000)]
    deliveries: usize,
    /// Requests in flight at once (one task each); with `--rate`, the most in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Deliveries per second to offer, on a fixed schedule (an open loop); without it
    /// each task sends as soon as its last request is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Deliveries sent first and not counted (connections, caches, the database warm up).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Delivery ids are PREFIX-w-N (warm-up) and PREFIX-m-N; the default is unique per run.
    #[arg(long)]
    id_prefix: Option<String>,
    /// Writes one line per measured request to FILE: milliseconds from the flood's
    /// start to the request's send, its latency in ms, and its status (0: no answer).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

/// What one phase (warm-up or measured) saw.
#[derive(Default)]
struct Tally {
    /// Microseconds from sending to the whole answer, one per request that got an answer.
    latencies_us: Vec<u64>,
    /// (µs from the flood's start to the send, latency in µs, status; 0 when unanswered)
    trace: Vec<(u64, u64, u16)>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    /// First error messages, for the reader (at most a few).
    error_samples: Vec<String>,
    /// 202 answers whose JSON says `"queued": true`.
    queued: u64,
    /// `run_id` of each queued answer.
    run_ids: Vec<i64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.trace.extend(other.trace);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        for sample in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(sample);
            }
        }
        self.queued += other.queued;
        self.run_ids.extend(other.run_ids);
    }

    fn accepted(&self) -> u64 {
        self.statuses.get(&202).copied().unwrap_or(0)
    }

    fn statuses_json(&self) -> serde_json::Value {
        self.statuses
            .iter()
            .map(|(status, count)| (status.to_string(), json!(count)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    fn distinct_runs(&self) -> usize {
        let mut ids = self.run_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// Everything a request needs, made before the clock starts.
struct Prepared {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    body: bytes::Bytes,
    headers: HeaderMap,
    delivery_header: HeaderName,
}

/// Sends `ids.len()` deliveries from `concurrency` tasks; returns the tally and the wall time.
async fn flood(
    prepared: Arc<Prepared>,
    ids: Vec<HeaderValue>,
    concurrency: usize,
    rate: Option<f64>,
) -> (Tally, Duration) {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let prepared = prepared.clone();
        let ids = ids.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latencies_us: Vec::with_capacity(ids.len() / concurrency.max(1) + 1),
                ..Tally::default()
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { break };
                let mut headers = prepared.headers.clone();
                headers.insert(prepared.delivery_header.clone(), id.clone());
                let request = prepared
                    .client
                    .post(prepared.urls[index % prepared.urls.len()].clone())
                    .headers(headers)
                    .body(prepared.body.clone());
                // Open loop: due at its place in the schedule; closed: now.
                let sent = match rate {
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(index as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let answer = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.map(|body| (status, body))
                    }
                    Err(error) => Err(error),
                };
                let elapsed = sent.elapsed();
                let status = answer.as_ref().map_or(0, |(status, _)| *status);
                tally.trace.push((
                    sent.duration_since(started).as_micros() as u64,
                    elapsed.as_micros() as u64,
                    status,
                ));
                match answer {
                    Ok((status, body)) => {
                        tally.latencies_us.push(elapsed.as_micros() as u64);
                        *tally.statuses.entry(status).or_default() += 1;
                        if status == 202
                            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
                            && value.get("queued") == Some(&json!(true))
                        {
                            tally.queued += 1;
                            if let Some(run_id) = value.get("run_id").and_then(|id| id.as_i64()) {
                                tally.run_ids.push(run_id);
                            }
                        } else if status != 202 && tally.error_samples.len() < 5 {
                            tally.error_samples.push(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            ));
                        }
                    }
                    Err(error) => {
                        tally.errors += 1;
                        if tally.error_samples.len() < 5 {
                            tally.error_samples.push(format!("{error:#}"));
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(error) => {
                total.errors += 1;
                total.error_samples.push(format!("task failed: {error}"));
            }
        }
    }
    (total, started.elapsed())
}

/// Writes `trace` in the order the requests were sent, one line each, after a comment
/// line with the flood's start (RFC 3339, UTC) to line it up with the daemon's log.
fn write_trace(
    path: &std::path::Path,
    started: SystemTime,
    trace: &mut [(u64, u64, u16)],
) -> Result<(), String> {
    use std::fmt::Write as _;
    trace.sort_unstable();
    let mut text = String::with_capacity(trace.len() * 24);
    let started = humantime::format_rfc3339_micros(started);
    let _ = writeln!(text, "# flood started at {started}");
    for (sent_us, latency_us, status) in trace.iter() {
        let _ = writeln!(
            text,
            "{:.3} {:.3} {status}",
            *sent_us as f64 / 1000.0,
            *latency_us as f64 / 1000.0
        );
    }
    std::fs::write(path, text).map_err(|error| format!("--trace {}: {error}", path.display()))
}

/// The value below which `fraction` of the sorted samples lie (nearest rank), in ms.
fn percentile_ms(sorted_us: &[u64], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (fraction * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    round3(sorted_us[index] as f64 / 1000.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn delivery_ids(prefix: &str, phase: &str, count: usize) -> Result<Vec<HeaderValue>, String> {
    (0..count)
        .map(|n| {
            HeaderValue::from_str(&format!("{prefix}-{phase}-{n}"))
                .map_err(|_| format!("--id-prefix `{prefix}` is not a valid header value"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("intake_bench: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    if args.deliveries == 0 || args.concurrency == 0 {
        return Err("--deliveries and --concurrency must be positive".to_string());
    }
    if args
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return Err("--rate must be a positive number of deliveries per second".to_string());
    }
    if args.commit.len() != 40 || !args.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "--commit `{}` is not a 40-hex commit id",
            args.commit
        ));
    }
    let urls = args
        .url
        .iter()
        .map(|url| reqwest::Url::parse(url).map_err(|error| format!("--url {url}: {error}")))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix = args.id_prefix.clone().unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        format!("bench-{}-{nanos}", std::process::id())
    });

    // One body for every delivery: only the delivery id differs, so it is signed once.
    let body = serde_json::to_vec(&json!({ "ref": args.git_ref, "after": args.commit }))
        .map_err(|error| error.to_string())?;
    let signature = gantry::source::webhook::sign(args.secret.as_bytes(), &body);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-gantry-signature-256"),
        HeaderValue::from_str(&signature).map_err(|error| error.to_string())?,
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|error| format!("HTTP client: {error}"))?;
    let prepared = Arc::new(Prepared {
        client,
        urls,
        body: bytes::Bytes::from(body),
        headers,
        delivery_header: HeaderName::from_static("x-gantry-delivery"),
    });
    let warmup_ids = delivery_ids(&prefix, "w", args.warmup)?;
    let measured_ids = delivery_ids(&prefix, "m", args.deliveries)?;

    let (warmup, warmup_time) = if args.warmup > 0 {
        flood(
            prepared.clone(),
            warmup_ids,
            args.concurrency.min(args.warmup),
            None,
        )
        .await
    } else {
        (Tally::default(), Duration::ZERO)
    };
    let flood_started = SystemTime::now();
    let (mut measured, elapsed) = flood(prepared, measured_ids, args.concurrency, args.rate).await;

    measured.latencies_us.sort_unstable();
    if let Some(path) = &args.trace {
        write_trace(path, flood_started, &mut measured.trace)?;
    }
    let seconds = elapsed.as_secs_f64();
    let answered = measured.latencies_us.len();
    let mean_ms = if answered == 0 {
        0.0
    } else {
        measured.latencies_us.iter().sum::<u64>() as f64 / answered as f64 / 1000.0
    };
    let mut errors_seen = warmup.error_samples.clone();
    errors_seen.extend(measured.error_samples.iter().cloned());
    errors_seen.truncate(5);
    let summary = json!({
        "url": args.url,
        "deliveries": args.deliveries,
        "concurrency": args.concurrency,
        "offered_per_second": args.rate,
        "seconds": round3(seconds),
        "per_second": (args.deliveries as f64 / seconds * 10.0).round() / 10.0,
        "mean_ms": round3(mean_ms),
        "p50_ms": percentile_ms(&measured.latencies_us, 0.50),
        "p90_ms": percentile_ms(&measured.latencies_us, 0.90),
        "p99_ms": percentile_ms(&measured.latencies_us, 0.99),
        "max_ms": measured.latencies_us.last().map_or(0.0, |&us| round3(us as f64 / 1000.0)),
        "statuses": measured.statuses_json(),
        "errors": measured.errors,
        "queued": measured.queued,
        "distinct_runs": measured.distinct_runs(),
        "warmup": {
            "deliveries": args.warmup,
            "seconds": round3(warmup_time.as_secs_f64()),
            "statuses": warmup.statuses_json(),
            "errors": warmup.errors,
            "queued": warmup.queued,
        },
        "accepted_total": warmup.accepted() + measured.accepted(),
        "delivery_id_prefix": prefix,
        "error_samples": errors_seen,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|error| error.to_string())?
    );
    let all_accepted = measured.accepted() == args.deliveries as u64
        && warmup.accepted() == args.warmup as u64
        && measured.errors == 0
        && warmup.errors == 0;
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
