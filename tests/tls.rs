//! TLS end to end with the real binary and a real client: `curl --cacert` downloads over HTTPS
//! with HTTP/2 (ALPN), and a certificate swap followed by SIGHUP is picked up by new connections
//! while a download that started under the old certificate carries on to the last byte.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh CA (written to `ca-{tag}.pem`) and a server certificate it signed for localhost and
/// 127.0.0.1, installed as `cert.pem` / `key.pem` (replaced by rename, as an operator would).
fn install_certificate(dir: &Path, tag: &str) -> PathBuf {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("keydrop test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_path = dir.join(format!("ca-{tag}.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem.new"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem.new"), leaf_key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
    ca_path
}

/// Runs curl; returns its exit code and what `-w` printed.
fn curl(ca: &Path, url: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let o = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "60", "-o"])
        .arg(out)
        .arg("--cacert")
        .arg(ca)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_and_a_certificate_swap_on_sighup_keeps_downloads_running() {
    // A data dir with a 16 MiB file and a link, prepared in-process.
    let s = Server::start().await;
    let data = s.add_file("iso", "image.iso", 16 * 1024 * 1024).await;
    s.open_order("ord").await;
    let link = s.issue("ord", "iso", 10).await;
    let root = s.stop().await;
    let dir = root.path();
    let ca_a = install_certificate(dir, "a");
    let (port, admin) = (free_port(), free_port());
    let config = dir.join("keydrop.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             public_base_url = \"https://127.0.0.1:{port}\"\n\
             [server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
             [storage]\ndata_dir = \"data\"\nfiles_dir = \"files\"\n"
        ),
    )
    .unwrap();
    let mut child = spawn_serve(&config, "warn");
    let base = format!("https://127.0.0.1:{port}");
    let sink = dir.join("sink");
    let started = Instant::now();
    while curl(&ca_a, &format!("{base}/healthz"), &sink, &[]).0 != 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "server never answered over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("{base}/d/{}", link.url.split("/d/").nth(1).unwrap());

    // A whole download over HTTPS, negotiated as HTTP/2.
    let out = dir.join("whole.iso");
    let (code, w) = curl(&ca_a, &url, &out, &[]);
    assert_eq!((code, w.as_str()), (0, "2 200"));
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), sha256_hex(&data));

    // A slow download (4 MiB/s: about 4 s) under certificate A...
    let slow_out = dir.join("slow.iso");
    let slow = Command::new("curl")
        .args(["-sS", "--http2", "--limit-rate", "4M", "--max-time", "60", "-o"])
        .arg(&slow_out)
        .arg("--cacert")
        .arg(&ca_a)
        .args(["-w", "%{http_version} %{http_code}"])
        .arg(&url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    // ...while the certificate is replaced and the server told so.
    let ca_b = install_certificate(dir, "b");
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let t0 = Instant::now();
    loop {
        if curl(&ca_b, &format!("{base}/healthz"), &sink, &[]).0 == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "new certificate not served after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = curl(&ca_a, &format!("{base}/healthz"), &sink, &[]);
    assert_eq!(code, 60, "the old certificate is still presented to new connections");

    let slow = slow.wait_with_output().unwrap();
    assert!(t0.elapsed() > Duration::from_millis(500), "the slow download was not in flight across the reload");
    assert!(slow.status.success(), "download under the old certificate failed: {:?}", slow);
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "2 200");
    assert_eq!(sha256_hex(&std::fs::read(&slow_out).unwrap()), sha256_hex(&data));

    // A reload with a broken key keeps the working certificate.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(curl(&ca_b, &format!("{base}/healthz"), &sink, &[]).0, 0);

    let _ = child.kill();
    let _ = child.wait();
}
