//! The PostgreSQL schema, as numbered SQL steps applied in order (`keydrop migrate`, and `serve`
//! at start). Steps run under a transaction-scoped advisory lock, so nodes starting together
//! apply each step once; `keydrop_schema` records which steps are in.
//!
//! Layout: the download path's hot rows in their own narrow tables (`links`: budget and spent
//! beside the record, one row per link; `order_gates` with a `version` every node polls), the
//! activity log as one table with one `seq` and the chain position in a one-row `chain_head`
//! taken `FOR UPDATE` by every transaction that appends; the admin entities (products,
//! customers, orders, keys, files, support requests) as JSON values in `kv`, keyed as the redb
//! backend keys them, so `move-store` copies them row for row.

use tokio_postgres::Client;

/// `(version, SQL)`; never edit a step once released: add the next one.
pub const STEPS: &[(i32, &str)] = &[(
    1,
    r"
CREATE TABLE links (
    link_id  bytea PRIMARY KEY,
    order_id text  NOT NULL,
    record   text  NOT NULL,
    budget   int8  NOT NULL,
    spent    int8  NOT NULL DEFAULT 0 CHECK (spent >= 0)
);
CREATE INDEX links_by_order ON links (order_id);

CREATE TABLE chain_head (
    id    int4 PRIMARY KEY CHECK (id = 1),
    seq   int8 NOT NULL,
    hash  text NOT NULL,
    at_us int8 NOT NULL
);
INSERT INTO chain_head VALUES (1, 0, repeat('0', 64), 0);

CREATE TABLE activity (
    seq       int8 PRIMARY KEY,
    at_us     int8 NOT NULL,
    kind      text NOT NULL,
    tenant_id text,
    order_id  text,
    node      text,
    json      text NOT NULL
);
CREATE INDEX activity_by_time   ON activity (at_us, seq);
CREATE INDEX activity_by_order  ON activity (order_id, seq) WHERE order_id IS NOT NULL;
CREATE INDEX activity_by_tenant ON activity (tenant_id, seq) WHERE tenant_id IS NOT NULL;
CREATE INDEX activity_by_kind   ON activity (kind, seq);

CREATE SEQUENCE gate_version;
CREATE TABLE order_gates (
    order_id text PRIMARY KEY,
    gate     text NOT NULL,
    version  int8 NOT NULL
);
CREATE INDEX order_gates_by_version ON order_gates (version);

CREATE TABLE kv (
    tbl   text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);
",
)];

/// The lock every migrating node takes (an arbitrary constant: "keydrop" in ASCII).
const LOCK: i64 = 0x6b_6579_6472_6f70;

/// Connects to `url` and applies the schema (`keydrop migrate`).
pub async fn migrate_url(url: &str) -> Result<i32, crate::store::StoreError> {
    let pg: tokio_postgres::Config =
        url.parse().map_err(|_| crate::store::StoreError::Bug("postgres_url does not parse".into()))?;
    let mut client = match super::Tls::for_config(&pg) {
        super::Tls::Plain => {
            let (c, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(super::classify)?;
            tokio::spawn(conn);
            c
        }
        super::Tls::Rustls(t) => {
            let (c, conn) = pg.connect(t).await.map_err(super::classify)?;
            tokio::spawn(conn);
            c
        }
    };
    migrate(&mut client).await.map_err(super::classify)
}

/// Applies the steps not yet applied; returns the schema version now in force.
pub async fn migrate(client: &mut Client) -> Result<i32, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keydrop_schema (version int4 PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let row = tx.query_one("SELECT coalesce(max(version), 0) FROM keydrop_schema", &[]).await?;
    let mut current: i32 = row.get(0);
    for (version, sql) in STEPS {
        if *version > current {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO keydrop_schema (version) VALUES ($1)", &[version]).await?;
            current = *version;
        }
    }
    tx.commit().await?;
    Ok(current)
}
