//! Tests that need a real process: SIGTERM with a download in flight, `keydrop verify-log` on
//! intact and tampered logs, and the log's formats here; `kill -9` in `crash.rs`; starting and
//! stopping the binary in `binary.rs`. One test binary, so CI links it once.

mod binary;
#[path = "../common/mod.rs"]
mod common;
mod crash;

use binary::*;
use common::*;
use http_body_util::BodyExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_a_download_in_flight_complete_and_refuses_new_connections() {
    let size = 16 * 1024 * 1024;
    let (root, data, link) = prepare(size, 5).await;
    let mut p = spawn(root.path()).await;
    let url = url_on(&link, p.port);
    let resp = within(10, "get", client().request(request("GET", &url, &[]))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(size);
    got.extend_from_slice(&within(10, "frame", body.frame()).await.unwrap().unwrap().into_data().unwrap());

    Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await.is_err(), "new connections refused");

    while let Some(f) = within(30, "frame", body.frame()).await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&data), "the in-flight download completed intact");
    let status = within(30, "exit", async { tokio::task::spawn_blocking(move || p.child.wait()).await }).await;
    assert!(status.unwrap().unwrap().success());
    let st = open_link_status(root.path(), &link).await;
    assert_eq!(st.bytes_spent, size as u64);
}

#[tokio::test]
async fn verify_log_names_the_first_tampered_record() {
    let (root, _data, link) = prepare(1000, 5).await;
    let p = write_config(root.path(), free_port());
    let s = {
        let cfg = test_config(root.path());
        Server::start_with(root, cfg).await
    };
    for _ in 0..3 {
        get(&link.url.replace(&link.url[7..link.url.find("/d/").unwrap()], &s.public.to_string()), &[]).await.unwrap();
    }
    let n = s.records().await.len() as u64;
    assert!(n >= 7, "issued + 3 × (started, finished): {n}");
    let root = s.stop().await;
    let (ok, out) = verify_log(&p);
    assert!(ok && out.contains(&format!("{n} records")), "{out}");

    // Flip one byte inside record 4's JSON, straight in the record file.
    let log = root.path().join("data").join(keydrop::store::RECORDS_FILE);
    let mut raw = std::fs::read(&log).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    let line = text.lines().find(|l| l.contains("\"seq\":4,")).unwrap();
    let at = line.as_ptr() as usize - text.as_ptr() as usize + line.find("\"bytes\":").unwrap() + 8;
    raw[at] = if raw[at] == b'9' { b'8' } else { b'9' };
    std::fs::write(&log, &raw).unwrap();
    let (ok, out) = verify_log(&p);
    assert!(!ok, "tampering must be detected");
    assert!(out.contains("record 4"), "{out}");
}

/// Records the database vouches for are gone (a file cut short, a bad restore): `verify-log`
/// says so, and the server refuses to start rather than continue the chain over the hole.
#[tokio::test]
async fn a_record_file_cut_short_is_reported_and_the_server_refuses_to_start() {
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let p = write_config(root.path(), port);
    let s = {
        let cfg = test_config(root.path());
        Server::start_with(root, cfg).await
    };
    for _ in 0..3 {
        get(&link.url.replace(&link.url[7..link.url.find("/d/").unwrap()], &s.public.to_string()), &[]).await.unwrap();
    }
    let root = s.stop().await;
    let (ok, out) = verify_log(&p);
    assert!(ok, "{out}");

    let log = root.path().join("data").join(keydrop::store::RECORDS_FILE);
    let text = std::fs::read(&log).unwrap();
    let end = text.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(end as u64 - 100).unwrap();

    let (ok, out) = verify_log(&p);
    assert!(!ok, "a short record file must fail verification: {out}");
    assert!(out.contains("activity.log") && out.contains("ends before record"), "{out}");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&p).stdout(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {stderr}");
    assert!(stderr.contains("activity.log"), "the refusal names the file: {stderr}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "nothing listens on the public port");
}

/// The binary serving `config` at the `info` log level with its stderr piped, once it answers
/// `/healthz` on `port`.
async fn serve_logging(config: &Path, port: u16) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("KEYDROP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    within(20, "ready", async {
        while !matches!(get(&format!("http://127.0.0.1:{port}/healthz"), &[]).await, Ok((200, _, _))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let config = write_config(root.path(), port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).unwrap();
    let child = serve_logging(&config, port).await;
    assert_eq!(get(&url_on(&link, port), &[]).await.unwrap().0, 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    assert!(stderr.contains("\"route\":\"download\""), "{stderr}");
    // The download's one request line: route, status, bytes, duration and link id.
    let line = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["message"] == "request" && v["span"]["route"] == "download")
        .unwrap_or_else(|| panic!("no request line for the download: {stderr}"));
    assert_eq!(line["fields"]["status"], 200, "{line}");
    assert_eq!(line["fields"]["bytes"], 1000, "{line}");
    assert!(line["fields"]["micros"].as_u64().is_some(), "{line}");
    assert_eq!(line["span"]["link_id"].as_str(), Some(link.link_id.as_str()), "{line}");
    let token = link.url.split("/d/").nth(1).unwrap().split('/').next().unwrap();
    assert!(!stderr.contains(token), "the link token never reaches the log");
}

/// Request lines are gathered per worker and written several at a time (`logbuf`): a download's
/// line still reaches stderr at once when the server goes idle, not at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_writes_its_request_lines_without_waiting_for_more() {
    use std::io::BufRead;
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let config = write_config(root.path(), port);
    let mut child = serve_logging(&config, port).await;
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(get(&url_on(&link, port), &[]).await.unwrap().0, 200);
    let line = within(5, "the download's request line while the server runs", async {
        loop {
            let line = rx.recv().await.expect("stderr open while the server runs");
            if line.contains("route=\"download\"") && line.contains("status=200") {
                return line;
            }
        }
    })
    .await;
    assert!(line.contains(&format!("link_id=\"{}\"", link.link_id)), "{line}");
    assert!(line.contains("bytes=1000"), "{line}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
}
