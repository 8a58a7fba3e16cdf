//! The `keydrop` command line (API.md §1): a thin shell over the library.

use clap::{Parser, Subcommand};
use keydrop::config::Config;
use keydrop::{demo, run, AppState, Listeners};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "keydrop", version, about = "Delivers purchased software through signed, counted download links")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file; defaults to $KEYDROP_CONFIG, then config/keydrop.toml (embedded defaults if absent).
        #[arg(long, env = "KEYDROP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Fresh data dir, sample product, order and link; then serve.
    Demo {
        /// Where the demo's data goes (wiped first).
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// Size of the generated sample file, in MiB.
        #[arg(long, default_value_t = 16)]
        sample_mib: u64,
    },
    /// Admin tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check the activity log's hash chain offline.
    VerifyLog {
        #[arg(long, env = "KEYDROP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Send signed pushes to a keydrop server (what an order system does).
    Push {
        #[command(subcommand)]
        command: PushCommand,
    },
    /// Create or upgrade the PostgreSQL schema (`serve` does it too, under a lock).
    Migrate {
        #[arg(long, env = "KEYDROP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Copy a stopped redb node's whole state into an empty PostgreSQL database.
    MoveStore {
        /// The target database, e.g. postgres://keydrop@db:5432/keydrop.
        #[arg(long)]
        to: String,
        /// The redb node's config (its data_dir and kek_file).
        #[arg(long, env = "KEYDROP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the admin API's OpenAPI document (what `GET /api/openapi.json` serves).
    Openapi,
    /// Add a new link-signing key (older keys keep verifying until their file is removed).
    RotateLinkKey {
        #[arg(long, env = "KEYDROP_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PushCommand {
    /// Revoke an order's links and keys: signs and POSTs to /api/revocations, retrying with
    /// backoff until a 2xx or a 4xx.
    Revoke {
        /// The admin listener, e.g. http://127.0.0.1:8081 (or the full endpoint URL).
        #[arg(long)]
        url: String,
        #[arg(long)]
        order: String,
        #[arg(long, default_value = "revoked by the order system")]
        reason: String,
        /// The push secret; defaults to $KEYDROP_PUSH_SECRET.
        #[arg(long, env = "KEYDROP_PUSH_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value_t = 10)]
        max_attempts: u32,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new random admin token and its [[principals]] stanza.
    New {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
    },
}

fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(&p).map_err(|e| e.to_string()),
        None => {
            let default = Path::new("config/keydrop.toml");
            if default.exists() {
                Config::load(default).map_err(|e| e.to_string())
            } else {
                Ok(Config::embedded_defaults())
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_tracing(format: keydrop::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYDROP_LOG").unwrap_or_else(|_| "info".into());
    // Colours only for a terminal: a log file or a pipe gets plain lines (a third fewer bytes,
    // no escape codes for whoever greps it).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(keydrop::logbuf::Stderr);
    match format {
        keydrop::config::LogFormat::Json => fmt.json().init(),
        // The same plain lines, written without the general-purpose machinery (see `logline`).
        keydrop::config::LogFormat::Text if !ansi => {
            fmt.fmt_fields(keydrop::logline::PlainFields).event_format(keydrop::logline::PlainLine::default()).init()
        }
        keydrop::config::LogFormat::Text => fmt.init(),
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    let public = tokio::net::TcpListener::bind(cfg.server.public_listen)
        .await
        .map_err(|e| format!("bind {}: {e}", cfg.server.public_listen))?;
    let admin = tokio::net::TcpListener::bind(cfg.server.admin_listen)
        .await
        .map_err(|e| format!("bind {}: {e}", cfg.server.admin_listen))?;
    tracing::info!(public = %public.local_addr().map_err(|e| e.to_string())?, admin = %admin.local_addr().map_err(|e| e.to_string())?, data_dir = %cfg.storage.data_dir.display(), "keydrop serving");
    let state = AppState::open(cfg).await.map_err(|e| e.to_string())?;
    if state.tls.is_some() {
        tokio::spawn(reload_tls_on_sighup(state.clone()));
    }
    run(Listeners { public, admin }, state, shutdown_signal()).await.map_err(|e| e.to_string())
}

/// SIGHUP: read the TLS certificate and key again (connections already open keep theirs).
async fn reload_tls_on_sighup(state: std::sync::Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match state.tls.as_ref().map(|t| t.reload()) {
            Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Some(Err(e)) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the previous certificate"),
            None => {}
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token { command: TokenCommand::New { role, name } } => {
            let (token, sha) = demo::new_admin_token();
            println!("token: {token}\n\n{}", demo::principal_stanza(&name, &role, &sha));
            Ok(())
        }
        Command::MoveStore { to, config } => load_config(config).and_then(|c| {
            let moved = runtime().block_on(keydrop::verify::move_store(&c, &to)).map_err(|e| e.to_string())?;
            println!("{moved}");
            Ok(())
        }),
        Command::Migrate { config } => load_config(config).and_then(|c| {
            let url = c.storage.postgres_url().ok_or("migrate needs storage.postgres_url or KEYDROP_POSTGRES_URL")?;
            let version =
                runtime().block_on(keydrop::store::pg::schema::migrate_url(&url)).map_err(|e| e.to_string())?;
            println!("schema at version {version}");
            Ok(())
        }),
        Command::VerifyLog { config } => {
            let checked = load_config(config).and_then(|c| {
                if c.storage.backend == keydrop::config::Backend::Postgres {
                    let log = runtime().block_on(keydrop::verify::verify_postgres(&c)).map_err(|e| e.to_string())?;
                    return Ok((log, None));
                }
                let log = keydrop::verify::verify_data_dir(&c.storage.data_dir).map_err(|e| e.to_string())?;
                let mirror = match &c.activity.jsonl_path {
                    Some(p) => Some(
                        keydrop::verify::verify_mirror_offline(&c.storage.data_dir, p).map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                Ok((log, mirror))
            });
            if let Ok((_, Some(m))) = &checked {
                match &m.first_bad {
                    None => println!("JSON Lines mirror intact: {} records", m.records),
                    Some((seq, why)) => {
                        println!("JSON Lines mirror BROKEN at record {seq}: {why}");
                        return ExitCode::from(1);
                    }
                }
            }
            return match checked.map(|(log, _)| log) {
                Ok(r) => match r.first_bad {
                    None => {
                        println!("activity log intact: {} records, last hash {}", r.records, r.last_hash);
                        ExitCode::SUCCESS
                    }
                    Some((seq, why)) => {
                        println!(
                            "activity log BROKEN at record {seq}: {why} ({} records verified before it)",
                            r.records
                        );
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("keydrop: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Push { command: PushCommand::Revoke { url, order, reason, secret, max_attempts } } => {
            let secret = secret.split(',').next().unwrap_or_default().trim().to_owned();
            return match runtime().block_on(keydrop::sender::revoke(&url, &secret, &order, &reason, max_attempts)) {
                Ok(sent) if sent.status < 300 => {
                    println!("{}", sent.body);
                    ExitCode::SUCCESS
                }
                Ok(sent) => {
                    eprintln!("keydrop push: refused with HTTP {}: {}", sent.status, sent.body);
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("keydrop push: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Openapi => {
            println!("{}", String::from_utf8_lossy(keydrop::openapi::bytes()));
            Ok(())
        }
        Command::RotateLinkKey { config } => load_config(config).and_then(|c| {
            let id = if c.storage.backend == keydrop::config::Backend::Postgres {
                runtime().block_on(keydrop::verify::rotate_link_key_postgres(&c)).map_err(|e| e.to_string())?
            } else {
                keydrop::secrets::rotate_link_key(&c.storage.data_dir).map_err(|e| e.to_string())?
            };
            println!("new link-signing key {id}; restart the server to sign with it");
            Ok(())
        }),
        Command::Serve { config } => load_config(config).and_then(|cfg| {
            init_tracing(cfg.log.format);
            runtime().block_on(serve(cfg))
        }),
        Command::Demo { dir, sample_mib } => {
            init_tracing(keydrop::config::LogFormat::Text);
            runtime().block_on(async {
                demo::run_demo(&dir, sample_mib << 20, shutdown_signal()).await.map_err(|e| e.to_string())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keydrop: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Request workers gather their log lines and write them out when they park (`logbuf`).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(keydrop::logbuf::worker_parked)
        .on_thread_stop(keydrop::logbuf::flush_this_thread)
        .build()
        .expect("tokio runtime")
}
