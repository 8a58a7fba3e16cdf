//! The built binary as a test drives it: a config on free ports, a data dir prepared
//! in-process, the process started once it answers, stopped with SIGTERM or `kill -9`.

use crate::common::*;
use keydrop::links::IssuedLink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
}

pub fn write_config(root: &Path, port: u16) -> PathBuf {
    let admin = free_port();
    let path = root.join("keydrop.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             public_base_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 20\n\
             [storage]\ndata_dir = \"data\"\nfiles_dir = \"files\"\n"
        ),
    )
    .unwrap();
    path
}

pub async fn spawn(root: &Path) -> Proc {
    write_config(root, free_port());
    spawn_with(root).await
}

pub fn url_on(link: &IssuedLink, port: u16) -> String {
    let token = link.url.split("/d/").nth(1).unwrap();
    format!("http://127.0.0.1:{port}/d/{token}")
}

/// Prepares a data dir in-process (file, open order, link), then stops so the binary can own it.
pub async fn prepare(size: usize, max_uses: u32) -> (tempfile::TempDir, Vec<u8>, IssuedLink) {
    let s = Server::start().await;
    let data = s.add_file("iso", "image.iso", size).await;
    s.open_order("ord").await;
    let link = s.issue("ord", "iso", max_uses).await;
    (s.stop().await, data, link)
}

pub async fn open_link_status(root: &Path, link: &IssuedLink) -> keydrop::links::LinkStatus {
    let cfg = test_config(root);
    let state = keydrop::AppState::open(cfg).await.unwrap();
    let st = keydrop::links::link_status(&state, &link.link_id, chrono::Utc::now()).await.unwrap().unwrap();
    state.store.close().await;
    st
}

/// Sends SIGTERM with the `kill` command and waits for a clean exit.
pub fn sigterm_and_wait(p: &mut Proc) {
    let st = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = p.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
}

/// Starts the binary on the config already written in `root`.
pub async fn spawn_with(root: &Path) -> Proc {
    let config = root.join("keydrop.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let port: u16 =
        text.split("public_listen = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    let child = spawn_serve(&config, "warn");
    within(20, "binary ready", async {
        loop {
            if let Ok((200, _, _)) = get(&format!("http://127.0.0.1:{port}/healthz"), &[]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Proc { child, port, config }
}
