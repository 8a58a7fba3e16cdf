//! A throwaway PostgreSQL for tests: `initdb` and `pg_ctl` from Debian's installed binaries
//! (`/usr/lib/postgresql/*/bin`) in a temp dir, on a free loopback port, with its socket in the
//! temp dir, removed on drop. As root it runs through `runuser -u postgres`, since PostgreSQL
//! refuses to run as root. No binaries → the test fails saying how to install them; it never
//! passes without a database.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// `postgres://keydrop@127.0.0.1:PORT/keydrop`
    pub url: String,
}

const INSTALL: &str = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin. \
     Install them with `apt-get install -y postgresql` (scripts/test.sh does this), then re-run.";

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().unwrap_or_else(|| panic!("{INSTALL}"))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root.
fn tool(bin: &Path, name: &str) -> Command {
    let exe = bin.join(name);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}. {INSTALL}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pg {
    /// A fresh cluster with an empty `keydrop` database owned by user `keydrop` (trust auth on
    /// loopback only).
    pub fn start() -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("keydrop-pg").tempdir().unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the cluster dir to postgres",
            );
        }
        let data = dir.path().join("data");
        let mut init = tool(&bin, "initdb");
        init.args(["-A", "trust", "-U", "keydrop", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
        run(init, "initdb");
        let port = super::free_port();
        let pg = Pg { url: format!("postgres://keydrop@127.0.0.1:{port}/keydrop"), dir, bin, port };
        pg.start_again();
        let mut create = tool(&pg.bin, "createdb");
        create.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "keydrop", "keydrop"]);
        run(create, "createdb");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (again) the server on its port, waiting until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut c = tool(&self.bin, "pg_ctl");
        c.args(["-w", "-t", "60", "-l"]).arg(self.dir.path().join("log")).arg("-D").arg(self.data());
        c.args(["-o", &opts, "start"]);
        run(c, "pg_ctl start");
    }

    /// A clean stop (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        let mut c = tool(&self.bin, "pg_ctl");
        c.args(["-w", "-m", "fast", "-D"]).arg(self.data()).arg("stop");
        run(c, "pg_ctl stop");
    }

    /// `kill -9` of the postmaster and every backend, as a crash would.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        // Every backend and the postmaster at once, so none of them gets to clean up.
        let children = Command::new("pgrep").args(["-P", &pid]).output().map(|o| o.stdout).unwrap_or_default();
        let mut pids: Vec<String> = String::from_utf8_lossy(&children).split_whitespace().map(str::to_owned).collect();
        pids.push(pid);
        let _ = Command::new("kill").arg("-9").args(&pids).status();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

static SHARED: std::sync::OnceLock<Pg> = std::sync::OnceLock::new();
static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Pg {
    /// One cluster for the whole test process (stopped and removed by a watchdog when the
    /// process exits, since statics are never dropped).
    pub fn shared() -> &'static Pg {
        SHARED.get_or_init(|| {
            let pg = Pg::start();
            let stop = format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runas}{ctl} -m immediate -D {data} stop >/dev/null 2>&1; rm -rf {dir}",
                pid = std::process::id(),
                runas = if is_root() { "runuser -u postgres -- " } else { "" },
                ctl = pg.bin.join("pg_ctl").display(),
                data = pg.data().display(),
                dir = pg.dir.path().display(),
            );
            // The watchdog outlives this process on purpose (it stops the cluster after it).
            let watchdog = Command::new("sh").args(["-c", &stop]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("sh");
            std::mem::forget(watchdog);
            pg
        })
    }

    /// A new empty database in this cluster; returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut create = tool(&self.bin, "createdb");
        create.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "keydrop", &name]);
        run(create, "createdb");
        format!("postgres://keydrop@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = tool(&self.bin, "pg_ctl");
        c.args(["-w", "-m", "immediate", "-D"]).arg(self.data()).arg("stop");
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
