//! Catalog calls: products, their files, their key pools. Keys are sealed before they reach the
//! writer and never appear in any answer.

use super::input::{got, Fields};
use super::to_json;
use super::views::{FileView, KeysAdded, ProductList, ProductView};
use super::{check_id, Ctx, Reply};
use crate::catalog::{Attached, FileError, FileSpec};
use crate::error::ApiError;
use crate::model::{Billing, CancelPolicy, Product, ProductKind};
use crate::orders::{is_country, market_list};
use crate::store::FileRecord;
use http::StatusCode;
use serde_json::{Map, Value};

const PRODUCT_FIELDS: &[&str] = &[
    "name",
    "kind",
    "term_days",
    "unit_price_cents",
    "currency",
    "cancel_policy",
    "unavailable_markets",
    "key_required",
    "billing",
    "trial_days",
    "one_per_customer",
];

pub async fn put_product(ctx: &Ctx<'_>, product_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    check_id("product_id", product_id)?;
    let mut f = Fields::new(body, PRODUCT_FIELDS);
    let name = f.req_str("name", 200);
    let kind = f.req_enum("kind", &["perpetual", "subscription"]);
    let term_days = f.opt_u64("term_days", 1, 3650);
    let price = f.req_u64("unit_price_cents", 0, 1_000_000_000_000);
    let currency = f.req_str("currency", 3);
    let policy = f.req_enum("cancel_policy", &["standard", "none", "support_request", "marketplace"]);
    let billing = f.has("billing").then(|| f.req_enum("billing", &["monthly", "annual"])).flatten();
    let trial_days = f.opt_u64("trial_days", 0, 365);
    let one_per_customer = f.opt_bool("one_per_customer").unwrap_or(false);
    let markets = f.str_array("unavailable_markets", false, 300, 64).unwrap_or_default();
    let key_required = f.opt_bool("key_required").unwrap_or(false);
    if let Some(c) = &currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            f.error("currency", "must be an ISO 4217 code such as USD");
        }
    }
    if kind == Some("subscription") && term_days.is_none() && billing.is_none() {
        f.error("term_days", "is required for subscriptions without billing");
    }
    if kind == Some("perpetual") {
        for (name, given) in [("billing", billing.is_some()), ("trial_days", trial_days.is_some())] {
            if given {
                f.error(name, "applies to subscriptions only");
            }
        }
    }
    for (i, m) in markets.iter().enumerate() {
        if !(is_country(m) || market_list(m).is_some()) {
            f.error(
                &format!("unavailable_markets[{i}]"),
                "must be an ISO 3166-1 alpha-2 code or a shipped list such as @azure-reservations",
            );
        }
    }
    f.finish()?;
    let product = Product {
        product_id: product_id.to_owned(),
        name: got(name),
        kind: if kind == Some("subscription") { ProductKind::Subscription } else { ProductKind::Perpetual },
        term_days: if kind == Some("subscription") { term_days.map(|d| d as u32) } else { None },
        unit_price_cents: got(price),
        currency: got(currency),
        cancel_policy: match policy {
            Some("none") => CancelPolicy::None,
            Some("support_request") => CancelPolicy::SupportRequest,
            Some("marketplace") => CancelPolicy::Marketplace,
            _ => CancelPolicy::Standard,
        },
        unavailable_markets: markets,
        key_required,
        updated_at: ctx.state.now(),
        billing: match billing {
            Some("monthly") => Some(Billing::Monthly),
            Some("annual") => Some(Billing::Annual),
            _ => None,
        },
        trial_days: trial_days.filter(|d| *d > 0).map(|d| d as u32),
        one_per_customer,
    };
    let created = ctx.state.store.put_product(product.clone()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, product_json(ctx, &product).await?))
}

/// The files of a product that new links may be issued for (not retired).
pub async fn files_of(ctx: &Ctx<'_>, product_id: &str) -> Result<Vec<FileRecord>, ApiError> {
    Ok(ctx.state.catalog.files_of(product_id).await?.into_iter().filter(|f| f.retired_at.is_none()).collect())
}

fn file_error(e: FileError) -> ApiError {
    match e {
        FileError::OutsideFilesDir => ApiError::field("path", "must be relative to files_dir and stay inside it"),
        FileError::Missing => ApiError::field("path", "no such file under files_dir"),
        FileError::NotAFile => ApiError::field("path", "is not a regular file"),
        FileError::HardLinked => ApiError::field("path", "has more than one hard link; copy the file instead"),
        FileError::Changed => ApiError::field("path", "changed while being attached"),
        FileError::Exists(old) => ApiError::conflict(
            "file_exists",
            format!(
                "this product already has {} ({}, {} bytes) as file {}; attach a new build under a new file_id",
                old.filename, old.path, old.size, old.file_id
            ),
        ),
        FileError::Unknown => ApiError::Missing { what: "file" },
        FileError::Store(s) => s.into(),
    }
}

async fn product_view(ctx: &Ctx<'_>, p: &Product) -> Result<ProductView, ApiError> {
    Ok(ProductView {
        product: p.clone(),
        files: ctx.state.catalog.files_of(&p.product_id).await?.iter().map(FileView::from).collect(),
        keys_available: ctx.state.store.keys_available(&p.product_id).await?,
    })
}

async fn product_json(ctx: &Ctx<'_>, p: &Product) -> Result<Value, ApiError> {
    Ok(to_json(&product_view(ctx, p).await?))
}

pub async fn load_product(ctx: &Ctx<'_>, product_id: &str) -> Result<Product, ApiError> {
    ctx.state.store.product(product_id).await?.ok_or(ApiError::Missing { what: "product" })
}

pub async fn put_file(
    ctx: &Ctx<'_>,
    product_id: &str,
    file_id: &str,
    body: &Map<String, Value>,
) -> Result<Reply, ApiError> {
    check_id("file_id", file_id)?;
    load_product(ctx, product_id).await?;
    let mut f = Fields::new(body, &["version", "language", "file_type", "path", "filename"]);
    let version = f.opt_str("version", 64);
    let language = f.opt_str("language", 35);
    let file_type = f.opt_str("file_type", 32);
    let path = f.req_str("path", 1024);
    let filename = f.req_str("filename", 255);
    if filename.as_deref().is_some_and(|n| n.contains(['/', '\\'])) {
        f.error("filename", "must be a file name, not a path");
    }
    if filename.as_deref().is_some_and(|n| matches!(n.trim(), "." | "..")) {
        // A link ending in `/.` or `/..` is normalised away by clients (to `/d/`: 404).
        f.error("filename", "must not be . or ..");
    }
    f.finish()?;
    let spec = FileSpec {
        file_id: file_id.to_owned(),
        product_id: product_id.to_owned(),
        path: got(path),
        filename: got(filename),
        version,
        language,
        file_type,
    };
    match ctx.state.catalog.attach(spec).await.map_err(file_error)? {
        Attached::Created(rec) => Ok((StatusCode::CREATED, to_json(&FileView::from(&rec)))),
        Attached::Existing(rec) => Ok((StatusCode::OK, to_json(&FileView::from(&rec)))),
    }
}

/// `DELETE /api/products/{p}/files/{f}`: retires the file (API.md §5.1).
pub async fn retire_file(ctx: &Ctx<'_>, product_id: &str, file_id: &str) -> Result<Reply, ApiError> {
    load_product(ctx, product_id).await?;
    let rec = ctx.state.catalog.retire(product_id, file_id, ctx.state.now()).await.map_err(file_error)?;
    Ok((StatusCode::OK, to_json(&FileView::from(&rec))))
}

pub async fn add_keys(ctx: &Ctx<'_>, product_id: &str, body: &Map<String, Value>) -> Result<Reply, ApiError> {
    load_product(ctx, product_id).await?;
    let mut f = Fields::new(body, &["keys"]);
    let keys = f.str_array("keys", true, 10_000, 256);
    if keys.as_ref().is_some_and(Vec::is_empty) {
        f.error("keys", "must not be empty");
    }
    f.finish()?;
    let sealed: Vec<Vec<u8>> = got(keys).iter().map(|k| ctx.state.sealer.seal(product_id, k.trim())).collect();
    let (added, available) = ctx.state.store.add_keys(product_id, sealed).await?;
    Ok((StatusCode::CREATED, to_json(&KeysAdded { added, available })))
}

pub async fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut products = Vec::new();
    for p in ctx.state.store.products().await? {
        products.push(product_view(ctx, &p).await?);
    }
    Ok((StatusCode::OK, to_json(&ProductList { products })))
}

pub async fn get(ctx: &Ctx<'_>, product_id: &str) -> Result<Reply, ApiError> {
    let p = load_product(ctx, product_id).await?;
    Ok((StatusCode::OK, product_json(ctx, &p).await?))
}
