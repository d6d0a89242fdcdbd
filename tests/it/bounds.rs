//! Output and input without end: a build that prints too much keeps a bounded log,
//! and a large build context is streamed, never held whole in memory.

use std::process::Command;

use gantry::engine::{MAX_LINE_BYTES, MAX_LOG_LINES};

use crate::common::*;

#[test]
fn a_build_that_prints_without_end_keeps_a_bounded_log_and_serves_it_whole() {
    require_docker();
    let repo = Repo::from_fixture();
    // Far more lines than a log keeps, and one line far longer than a line may be.
    repo.write(
        "Dockerfile",
        &format!(
            // The echo makes the steps new to the layer cache, so they run and print.
            "FROM gantry-test/busybox:latest\nRUN echo {} && seq 1 {}\nRUN head -c {} /dev/zero | tr '\\\\0' x; echo\nCMD [\"true\"]\n",
            unique("noisy"),
            MAX_LOG_LINES + 5_000,
            MAX_LINE_BYTES * 3
        ),
    );
    repo.commit("noisy");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("noisy"));
    config.pipeline("noisy", &repo.url(), &repository, &["{{ commit.short }}"]);
    config.write("gantry.yaml", "server:\n  public_read: true\n");
    let output = config.gantry(&["build", "noisy"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let output = config.gantry(&["--json", "logs", "noisy#1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // One JSON document per line.
    let lines: Vec<String> = stdout(&output)
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            line["line"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        lines.len(),
        MAX_LOG_LINES + 1,
        "{:?}",
        &lines[lines.len() - 3..]
    );
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with("[log] ")
            && summary.contains("more lines")
            && summary.contains("were not kept"),
        "{summary}"
    );
    // The run page's plain text streams the same lines.
    let daemon = Daemon::start(&config);
    let (status, text) = daemon.get("/runs/1/log.txt");
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), lines.len());
    assert_eq!(text.lines().last().unwrap(), summary.as_str());
    let (status, page) = daemon.get("/runs/1");
    assert_eq!(status, 200);
    assert!(
        page.contains("are left off this page"),
        "the page shows the last lines only"
    );
}

/// Runs `command` to its end; its exit code, and the most anonymous memory (heap and
/// stacks, not mapped files, which the kernel may drop at will) it was seen to hold,
/// in MiB, read from `/proc` every 10 ms.
fn peak_memory(command: &mut Command) -> (Option<i32>, u64) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("RssAnon:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), peak_kib / 1024);
        }
        // The sampling period of the measurement, not a wait for something to hold.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_large_build_context_is_streamed_not_held_in_memory() {
    require_docker();
    let repo = Repo::from_fixture();
    // 48 MiB of files that do not compress, which the Dockerfile never reads (stored
    // without compression, which would only cost time here).
    const FILES: usize = 12;
    const FILE_MIB: usize = 4;
    for index in 0..FILES {
        let path = repo.path().join(format!("data/blob-{index}.bin"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        run(Command::new("head")
            .args(["-c", &format!("{}", FILE_MIB * 1024 * 1024), "/dev/urandom"])
            .stdout(std::fs::File::create(&path).unwrap()));
    }
    repo.git(&["config", "core.compression", "0"]);
    repo.commit("large context");
    let mut config = ConfigDir::new();
    let repository = format!("{}/gantry-it/{}", registry(), unique("large"));
    config.pipeline("large", &repo.url(), &repository, &["{{ commit.short }}"]);
    let build = || {
        peak_memory(
            Command::new(env!("CARGO_BIN_EXE_gantry"))
                .arg("--config")
                .arg(config.path())
                .args(["build", "large"])
                .env("DOCKER_CONFIG", config.docker_config.path())
                .env_remove("DOCKER_HOST"),
        )
    };
    // The first build clones the repository, which libgit2's local transport does in
    // memory; the second finds the cache up to date and measures the context alone.
    assert_eq!(build().0, Some(0));
    let (code, peak_mib) = build();
    assert_eq!(code, Some(0));
    let (_, runs) = config.gantry_json(&["runs", "large"]);
    assert_eq!(runs[0]["state"], "succeeded", "{runs}");
    // Holding the context in memory even once would take all of it.
    let context_mib = (FILES * FILE_MIB) as u64;
    assert!(
        peak_mib < context_mib / 2,
        "{peak_mib} MiB of heap for a {context_mib} MiB context"
    );
}
