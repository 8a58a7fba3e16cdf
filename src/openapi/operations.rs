//! What the document says about each admin call: its summary, query parameters, request body,
//! success answers and refusals (status and `code` values). One exhaustive `match` over
//! [`Admin`], so a new call does not compile until it is described; the refusals every call can
//! get (`401`, `403`, `404`, `500`, `503`, and `400`/`408` for calls with a body) are added by
//! the document builder.

use crate::router::Admin;

/// A query parameter: name, JSON Schema type, required, description.
pub type Param = (&'static str, &'static str, bool, &'static str);

pub struct Op {
    pub summary: &'static str,
    /// The request body's schema name, for `POST`/`PUT`/`PATCH`.
    pub body: Option<&'static str>,
    /// Success statuses with their answer's schema name.
    pub ok: &'static [(u16, &'static str)],
    pub query: &'static [Param],
    /// Refusals particular to this call: status and the `code` values it may carry.
    pub refusals: &'static [(u16, &'static [&'static str])],
}

const GONE: (u16, &[&str]) = (410, &["revoked"]);
const SUSPENDED: (u16, &[&str]) = (403, &["suspended"]);
const SUBSCRIPTION: (u16, &[&str]) = (409, &["not_a_subscription", "retention_expired"]);

const ACTIVITY_QUERY: &[Param] = &[
    ("from", "string", false, "Start (inclusive): an RFC 3339 time or a date such as 2026-11-21."),
    ("to", "string", false, "End (inclusive): an RFC 3339 time or a date (the whole day)."),
    ("kind", "string", false, "One kind of record, such as download.started."),
    ("tenant_id", "string", false, "One customer's records."),
    ("order_id", "string", false, "One order's records."),
    ("after_seq", "integer", false, "The cursor: records after this seq (next_after_seq of the last page)."),
    ("limit", "integer", false, "Records per page, 1 to 1000 (default 100)."),
];

const fn op(summary: &'static str, ok: &'static [(u16, &'static str)]) -> Op {
    Op { summary, body: None, ok, query: &[], refusals: &[] }
}

const fn with_body(summary: &'static str, body: &'static str, ok: &'static [(u16, &'static str)]) -> Op {
    Op { summary, body: Some(body), ok, query: &[], refusals: &[] }
}

/// The description of `call` (its path parameters do not matter).
pub fn describe(call: &Admin) -> Op {
    use Admin::*;
    match call {
        PutProduct { .. } => with_body(
            "Create or replace a product (201 when created, 200 when replaced)",
            "PutProductBody",
            &[(200, "ProductView"), (201, "ProductView")],
        ),
        PutFile { .. } => Op {
            refusals: &[(409, &["file_exists"])],
            ..with_body(
                "Attach a file under files_dir to a product (201; 200 when the same file is attached again)",
                "PutFileBody",
                &[(200, "FileView"), (201, "FileView")],
            )
        },
        RetireFile { .. } => op("Retire a file: no new links; issued ones keep serving", &[(200, "FileView")]),
        AddKeys { .. } => with_body("Add activation keys to a product's pool", "AddKeysBody", &[(201, "KeysAdded")]),
        ListProducts => op("The catalog", &[(200, "ProductList")]),
        GetProduct { .. } => op("One product with its files and key pool", &[(200, "ProductView")]),
        CreateCustomer => Op {
            refusals: &[(409, &["customer_exists"])],
            ..with_body("Create a customer", "CreateCustomerBody", &[(201, "Customer")])
        },
        FindCustomer => Op {
            query: &[("domain", "string", true, "The customer's domain (or its tenant GUID).")],
            ..op("Find a customer by domain", &[(200, "Customer")])
        },
        GetCustomer { .. } => op("One customer", &[(200, "Customer")]),
        Buy { .. } => Op {
            refusals: &[(409, &["out_of_keys", "already_subscribed"]), (422, &["unavailable_in_market"])],
            ..with_body("Buy software for a customer", "BuyBody", &[(201, "OrderView")])
        },
        Software { .. } => op("A customer's Software: every bought item and its state", &[(200, "SoftwareList")]),
        GetOrder { .. } => op("One order, in the state its terms imply now", &[(200, "OrderView")]),
        PatchOrder { .. } => Op {
            refusals: &[GONE, (409, &["not_a_subscription"])],
            ..with_body("Turn a subscription's auto-renewal on or off", "PatchOrderBody", &[(200, "OrderView")])
        },
        Downloads { .. } => Op {
            refusals: &[GONE, SUSPENDED],
            ..with_body(
                "Get keys and downloads: the item's key and a fresh link per matching file",
                "DownloadsBody",
                &[(201, "DownloadsIssued")],
            )
        },
        Keys { .. } => Op { refusals: &[GONE, SUSPENDED], ..op("An order's activation keys", &[(200, "KeyList")]) },
        Cancellation { .. } => {
            op("Whether, until when, for what credit and how the order can be cancelled", &[(200, "CancelPreview")])
        }
        Cancel { .. } => Op {
            refusals: &[(409, &["window_closed", "not_cancellable", "support_request_required", "already_cancelled"])],
            ..with_body(
                "Cancel an order: at once (every link and key stops) or, past a marketplace window, at the term's end",
                "CancelBody",
                &[(200, "CancelResult")],
            )
        },
        Suspend { .. } => Op { refusals: &[GONE, SUBSCRIPTION], ..op("Suspend a subscription", &[(200, "OrderView")]) },
        Reactivate { .. } => {
            Op { refusals: &[GONE, SUBSCRIPTION], ..op("Reactivate a suspended subscription", &[(200, "OrderView")]) }
        }
        GetLink { .. } => op("One link's state and downloads used", &[(200, "LinkStatus")]),
        OrderLinks { .. } => op("An order's links, newest first (up to 200)", &[(200, "LinkList")]),
        CreateSupportRequest => {
            with_body("Open a support request (e.g. a cancellation)", "SupportBody", &[(201, "SupportCreated")])
        }
        GetSupportRequest { .. } => op("One support request", &[(200, "SupportRequest")]),
        Activity => Op {
            query: ACTIVITY_QUERY,
            ..op("The activity log by date, one page (JSON, or CSV with Accept: text/csv)", &[(200, "ActivityPage")])
        },
        VerifyActivity => op("Recompute the activity log's hash chain", &[(200, "VerifyReport")]),
        Revocation => Op {
            refusals: &[(401, &["bad_signature"])],
            ..with_body(
                "The order system revokes an order (signed with Keydrop-Signature, no bearer token)",
                "RevocationBody",
                &[(200, "RevocationResult")],
            )
        },
        Me => op("Who the caller is", &[(200, "Me")]),
        CreateCustomerToken { .. } => {
            with_body("Give a customer its own API token (shown once)", "TokenBody", &[(201, "TokenView")])
        }
        ListCustomerTokens { .. } => {
            op("A customer's live tokens (never the tokens themselves)", &[(200, "TokenList")])
        }
        EndCustomerToken { .. } => op("End a customer token, at once, on every node", &[(200, "TokenEnded")]),
    }
}
