//! The TOML configuration of API.md §2: every key has a default except the principals; relative
//! paths are resolved against the config file's folder. Unknown keys are refused so a typo is
//! caught at start-up rather than silently ignored.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub links: LinksConfig,
    pub orders: OrdersConfig,
    pub revocation: RevocationConfig,
    pub activity: ActivityConfig,
    pub log: LogConfig,
    pub cluster: ClusterConfig,
    pub principals: Vec<Principal>,
}

/// `[cluster]`: what several nodes on one database promise each other (API.md §5.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// A node that cannot confirm order states this fresh stops serving downloads.
    pub max_gate_staleness_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { max_gate_staleness_ms: 1000 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// A JSON Lines mirror of the activity log (off by default): every committed record is
    /// appended as one line and fsynced with its group commit, for log shippers to tail.
    pub jsonl_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub public_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub public_base_url: String,
    /// Open connections per listener beyond which new ones get `503 unavailable` and are closed.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long downloads in flight may run before they are cut off.
    pub shutdown_grace_secs: u64,
    /// Open connections from one IP address beyond which new ones get `503` (download
    /// accelerators open 16; offices share an address).
    pub max_connections_per_ip: usize,
    /// A connection on which no byte moves either way for this long is closed: idle keep-alive
    /// connections and stalled downloads alike.
    pub idle_timeout_secs: u64,
    /// A request head must arrive whole within this long (slowloris).
    pub header_read_timeout_secs: u64,
    /// A request body (admin calls, revocation pushes) must arrive whole within this long, or
    /// the request gets `408` and its connection is closed (a body dripping one byte at a time).
    pub body_read_timeout_secs: u64,
    /// The largest request head (request line and headers); larger ones get `431`.
    pub max_header_bytes: usize,
    /// The most header fields in one request; more get `431`.
    pub max_headers: usize,
    /// The largest admin API request body; larger ones get `400`.
    pub admin_max_body_bytes: usize,
    /// TLS for the listeners (off when absent).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: a PEM certificate chain and private key, reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Serve TLS on the public listener (default true).
    #[serde(default = "yes")]
    pub public: bool,
    /// Serve TLS on the admin listener (default true).
    #[serde(default = "yes")]
    pub admin: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the state lives (API.md §5.3): `redb`, embedded, one node (the default), or
    /// `postgres`, shared by several nodes.
    pub backend: Backend,
    /// With `postgres`: the database (or env `KEYDROP_POSTGRES_URL`, which wins).
    pub postgres_url: Option<String>,
    /// This node's name in activity records (default: the host name).
    pub node_id: Option<String>,
    pub data_dir: PathBuf,
    pub files_dir: PathBuf,
    /// The key-encryption key for activation keys (32 bytes); default `data_dir/kek.key`,
    /// generated with mode 0600 on first start.
    pub kek_file: Option<PathBuf>,
    /// Serve catalog files larger than 64 KiB from a read-only memory mapping (default true):
    /// one copy fewer per byte. Files must then never be shrunk in place while served (replace
    /// them by renaming a new file over the old one); see `mapped.rs`.
    pub map_files: bool,
}

/// The storage backend, chosen once at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Redb,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    pub ttl_days: u32,
    pub max_uses: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersConfig {
    pub cancel_window_days: u32,
    pub suspension_retention_days: u32,
    /// How often the lifecycle clock applies due term changes (API.md §5.5); 30 s keeps every
    /// change within a minute of its time.
    pub lifecycle_tick_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    pub push_secret: Option<String>,
    /// One secret per line; several lines are all accepted (rotation).
    pub push_secret_file: Option<PathBuf>,
    /// More secrets accepted at the same time (rotation).
    pub push_secrets: Vec<String>,
}

impl RevocationConfig {
    /// Every accepted push secret: `push_secret`, `push_secrets`, the lines of
    /// `push_secret_file`, and `$KEYDROP_PUSH_SECRET` (comma-separated). Empty means pushes are
    /// refused.
    pub fn secrets(&self) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = self.push_secret.iter().chain(&self.push_secrets).cloned().collect();
        if let Some(f) = &self.push_secret_file {
            let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read { path: f.clone(), source })?;
            out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
        }
        if let Ok(env) = std::env::var("KEYDROP_PUSH_SECRET") {
            out.extend(env.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
        }
        out.retain(|s| !s.is_empty());
        Ok(out)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    pub role: String,
    pub token_sha256: String,
    /// The tenant a `customer_admin` belongs to (API.md §5.4); partner roles have none.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_listen: "127.0.0.1:8080".parse().expect("literal"),
            admin_listen: "127.0.0.1:8081".parse().expect("literal"),
            public_base_url: "http://127.0.0.1:8080".into(),
            max_connections: 10_000,
            shutdown_grace_secs: 30,
            max_connections_per_ip: 256,
            idle_timeout_secs: 60,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            admin_max_body_bytes: 512 * 1024,
            tls: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Redb,
            postgres_url: None,
            node_id: None,
            data_dir: "../data".into(),
            files_dir: "../files".into(),
            kek_file: None,
            map_files: true,
        }
    }
}

impl StorageConfig {
    /// The database URL: `KEYDROP_POSTGRES_URL` if set, else `postgres_url`.
    pub fn postgres_url(&self) -> Option<String> {
        std::env::var("KEYDROP_POSTGRES_URL").ok().filter(|u| !u.is_empty()).or_else(|| self.postgres_url.clone())
    }

    /// This node's name: `node_id`, else the host name.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "keydrop".into())
        })
    }
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig { ttl_days: 14, max_uses: 50 }
    }
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig { cancel_window_days: 60, suspension_retention_days: 90, lifecycle_tick_secs: 30 }
    }
}

impl Config {
    /// Reads and validates a config file, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut cfg: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_paths(&base);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedded defaults, as if a config file with no keys sat in `./config/`: the data
    /// lands in `./data` and files are served from `./files`.
    pub fn embedded_defaults() -> Config {
        let mut cfg = Config::default();
        cfg.resolve_paths(Path::new("config"));
        cfg
    }

    /// Makes relative storage paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.storage.data_dir, &mut self.storage.files_dir] {
            if p.is_relative() {
                *p = normalize(&base.join(&*p));
            }
        }
        if let Some(f) = self.storage.kek_file.as_mut() {
            if f.is_relative() {
                *f = normalize(&base.join(&*f));
            }
        }
        if let Some(f) = self.activity.jsonl_path.as_mut() {
            if f.is_relative() {
                *f = normalize(&base.join(&*f));
            }
        }
        if let Some(f) = self.revocation.push_secret_file.as_mut() {
            if f.is_relative() {
                *f = normalize(&base.join(&*f));
            }
        }
        if let Some(tls) = self.server.tls.as_mut() {
            for f in [&mut tls.cert, &mut tls.key] {
                if f.is_relative() {
                    *f = normalize(&base.join(&*f));
                }
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.links.max_uses == 0 || self.links.ttl_days == 0 {
            return Err(ConfigError::Invalid("links.max_uses and links.ttl_days must be at least 1".into()));
        }
        if !(self.server.public_base_url.starts_with("http://") || self.server.public_base_url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid("server.public_base_url must start with http:// or https://".into()));
        }
        let s = &self.server;
        if s.max_connections == 0 || s.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections and server.max_connections_per_ip must be at least 1".into(),
            ));
        }
        if s.idle_timeout_secs == 0 || s.header_read_timeout_secs == 0 || s.body_read_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "server.idle_timeout_secs, header_read_timeout_secs and body_read_timeout_secs must be at least 1"
                    .into(),
            ));
        }
        // hyper needs room for at least one 8 KiB read.
        if s.max_header_bytes < 8192 || s.max_headers == 0 || s.admin_max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.max_header_bytes must be at least 8192; max_headers and admin_max_body_bytes at least 1".into(),
            ));
        }
        if self.storage.backend == Backend::Postgres {
            if self.storage.postgres_url().is_none() {
                return Err(ConfigError::Invalid(
                    "storage.backend = \"postgres\" needs storage.postgres_url or KEYDROP_POSTGRES_URL".into(),
                ));
            }
            if self.storage.kek_file.is_none() {
                return Err(ConfigError::Invalid(
                    "storage.backend = \"postgres\" needs storage.kek_file: the same key file on every node".into(),
                ));
            }
        }
        if self.storage.backend == Backend::Postgres && self.activity.jsonl_path.is_some() {
            return Err(ConfigError::Invalid(
                "activity.jsonl_path is the embedded backend's mirror; with postgres the database is the log".into(),
            ));
        }
        if self.cluster.max_gate_staleness_ms == 0 {
            return Err(ConfigError::Invalid("cluster.max_gate_staleness_ms must be at least 1".into()));
        }
        for p in &self.principals {
            if p.token_sha256.len() != 64 || !p.token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid(format!(
                    "principal {:?}: token_sha256 must be 64 hex characters",
                    p.name
                )));
            }
            let customer = p.role == "customer_admin";
            match &p.tenant_id {
                Some(t) if customer && crate::orders::is_guid(&t.to_ascii_lowercase()) => {}
                None if !customer => {}
                _ if customer => {
                    return Err(ConfigError::Invalid(format!(
                        "principal {:?}: a customer_admin needs tenant_id, the GUID of its tenant",
                        p.name
                    )))
                }
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "principal {:?}: only a customer_admin belongs to a tenant_id",
                        p.name
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Removes `.` and folds `..` lexically, so `config/../data` reads as `data` in messages.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_contract_defaults_relative_to_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_dir = dir.path().join("config");
        std::fs::create_dir(&cfg_dir).unwrap();
        std::fs::write(cfg_dir.join("keydrop.toml"), "").unwrap();
        let cfg = Config::load(&cfg_dir.join("keydrop.toml")).unwrap();
        assert_eq!(cfg.server.public_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.server.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(cfg.links.ttl_days, 14);
        assert_eq!(cfg.links.max_uses, 50);
        assert_eq!(cfg.orders.cancel_window_days, 60);
        assert_eq!(cfg.orders.suspension_retention_days, 90);
        assert_eq!(cfg.storage.data_dir, dir.path().join("data"));
        assert_eq!(cfg.storage.files_dir, dir.path().join("files"));
        assert_eq!(cfg.storage.backend, Backend::Redb);
    }

    #[test]
    fn storage_backend_is_redb_or_postgres() {
        let cfg: Config = toml::from_str("[storage]\nbackend = \"postgres\"").unwrap();
        assert_eq!(cfg.storage.backend, Backend::Postgres);
        let cfg: Config = toml::from_str("[storage]\nbackend = \"redb\"").unwrap();
        assert_eq!(cfg.storage.backend, Backend::Redb);
        assert!(toml::from_str::<Config>("[storage]\nbackend = \"sqlite\"").is_err());
    }

    #[test]
    fn shipped_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keydrop.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.links.max_uses, 50);
    }

    #[test]
    fn log_format_json_is_accepted() {
        let cfg: Config = toml::from_str("[log]\nformat = \"json\"").unwrap();
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert!(toml::from_str::<Config>("[log]\nformat = \"xml\"").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[links]\nmax_use = 3").is_err());
        let mut cfg = Config::default();
        cfg.links.max_uses = 0;
        assert!(cfg.validate().is_err());
    }
}
