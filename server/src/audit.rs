//! The audit log leaving the server: CSV or JSON with every entry's chain link and hash, and
//! the chain's verification at export time, for `trialflow audit export` and the admin page.
use crate::connections::KnownSecrets;
use crate::store::Db;
use crate::store::audit::{AuditEntry, ChainReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv",
            ExportFormat::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }
}

const PAGE: i64 = 1000;

/// Every entry, oldest first. A detail that contained a known secret value is exported masked
/// and flagged (`detail_redacted`): that one entry can then be re-hashed only in the database.
pub async fn export(
    db: &Db,
    secrets: &KnownSecrets,
    format: ExportFormat,
) -> anyhow::Result<Vec<u8>> {
    let report = db.verify_audit().await?;
    let mut entries: Vec<(AuditEntry, bool)> = Vec::new();
    let mut after = 0;
    loop {
        let page = db.audit_after(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for mut e in page {
            let masked = secrets.redact_text(&e.detail);
            let redacted = masked != e.detail;
            e.detail = masked;
            entries.push((e, redacted));
        }
    }
    match format {
        ExportFormat::Json => json(&report, &entries),
        ExportFormat::Csv => csv(&entries),
    }
}

fn json(report: &ChainReport, entries: &[(AuditEntry, bool)]) -> anyhow::Result<Vec<u8>> {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(e, redacted)| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["at_utc"] = serde_json::Value::String(utc(e.at));
            v["detail_redacted"] = serde_json::Value::Bool(*redacted);
            v
        })
        .collect();
    let body = serde_json::json!({
        "format": "trialflow-audit-v1",
        "hash": "sha256 over the JSON array [\"trialflow-audit-v1\", at, actor, action, target, detail, prev_hash]",
        "software_version": env!("CARGO_PKG_VERSION"),
        "exported_at_utc": utc(crate::store::now_ms()),
        "chain": report,
        "entries": entries,
    });
    Ok(serde_json::to_vec_pretty(&body)?)
}

fn csv(entries: &[(AuditEntry, bool)]) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "id",
        "at",
        "at_utc",
        "actor",
        "action",
        "target",
        "detail",
        "detail_redacted",
        "prev_hash",
        "hash",
    ])?;
    for (e, redacted) in entries {
        out.write_record([
            e.id.to_string().as_str(),
            e.at.to_string().as_str(),
            &utc(e.at),
            &e.actor,
            &e.action,
            &e.target,
            &e.detail,
            if *redacted { "true" } else { "false" },
            &e.prev_hash,
            &e.hash,
        ])?;
    }
    Ok(out.into_inner()?)
}

fn utc(ms: i64) -> String {
    crate::store::utc_text(ms).unwrap_or_default()
}
