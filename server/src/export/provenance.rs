//! Export provenance: when a run that wrote files ends, a `manifest.json` lands beside them
//! (in each local folder, and under each S3 prefix) naming the software, pipeline, run and its
//! parameters, who triggered it and the audit entry that records it, and per file: the study,
//! connection id (never a secret), filters, rows, size, SHA-256 and times.
//! `trialflow verify-export` re-hashes the files against it.
use super::hex;
use crate::operators::Services;
use crate::store::connections::ArtifactRow;
use crate::store::engine::TiRow;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "trialflow-export-manifest-v1";

/// Where a group of a run's files lives: one local folder or one S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Place {
    fn of(uri: &str) -> Option<(Place, String)> {
        if uri.starts_with("s3://") {
            let (bucket, key) = crate::objstore::parse_s3_url(uri).ok()?;
            let (prefix, name) = match key.rsplit_once('/') {
                Some((p, n)) => (format!("{p}/"), n.to_string()),
                None => (String::new(), key),
            };
            return Some((Place::S3 { bucket, prefix }, name));
        }
        let path = Path::new(uri);
        let name = path.file_name()?.to_string_lossy().into_owned();
        Some((Place::Local(path.parent()?.to_path_buf()), name))
    }
}

/// Writes the manifests of a run whose instances have all ended, just before the run is
/// marked ended (so whoever waits for the run finds them). A failure is logged and never
/// changes the run's outcome.
pub async fn write_before_run_ends(services: &Services, run_id: i64) {
    match write_for_run(services, run_id).await {
        Ok(written) if !written.is_empty() => {
            tracing::info!(
                run_id,
                manifests = written.len(),
                "export manifests written"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(run_id, error = %e, "writing the export manifests failed"),
    }
}

/// One manifest per folder / prefix the run wrote files to (replacing an earlier one when a
/// cleared run ends again); returns where they went.
pub async fn write_for_run(services: &Services, run_id: i64) -> anyhow::Result<Vec<String>> {
    let db = &services.db;
    let artifacts: Vec<ArtifactRow> = db
        .run_artifacts(run_id)
        .await?
        .into_iter()
        .filter(|a| !a.uri.ends_with(&format!("/{MANIFEST}")))
        .collect();
    if artifacts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(run) = db.run_row(run_id).await? else {
        return Ok(Vec::new());
    };
    let instances: BTreeMap<i64, TiRow> = db
        .run_instances(run_id)
        .await?
        .into_iter()
        .map(|ti| (ti.id, ti))
        .collect();
    let audit_hash = db
        .audit_hash_of("run.trigger", &format!("{} run {run_id}", run.pipeline_id))
        .await?;
    let conf: Value = serde_json::from_str(&run.conf).unwrap_or(Value::Null);
    // The run ends right after this, with this outcome.
    let outcome = if instances
        .values()
        .any(|ti| ti.state == "failed" || ti.state == "upstream_failed")
    {
        "failed"
    } else {
        "success"
    };
    let ended_at = crate::store::now_ms();
    let mut groups: BTreeMap<Place, Vec<Value>> = BTreeMap::new();
    let mut first_instance: BTreeMap<Place, i64> = BTreeMap::new();
    for a in &artifacts {
        let Some((place, name)) = Place::of(&a.uri) else {
            continue;
        };
        let ti = instances.get(&a.task_instance_id);
        groups
            .entry(place.clone())
            .or_default()
            .push(file_entry(&name, a, ti));
        first_instance.entry(place).or_insert(a.task_instance_id);
    }
    let mut written = Vec::new();
    for (place, files) in groups {
        let manifest = json!({
            "format": FORMAT,
            "software": {"name": "trialflow", "version": env!("CARGO_PKG_VERSION")},
            "pipeline": run.pipeline_id,
            "run_id": run_id,
            "run_state": outcome,
            "run_trigger": run.run_trigger,
            "triggered_by": run.triggered_by,
            "trigger_audit_hash": audit_hash,
            "conf": services.secrets.redact_json(&conf),
            "queued_at": utc(Some(run.queued_at)),
            "started_at": utc(run.started_at),
            "ended_at": utc(Some(ended_at)),
            "files": files,
        });
        let body = serde_json::to_vec_pretty(&manifest)?;
        let sha = hex(&Sha256::digest(&body));
        let uri = match &place {
            Place::Local(dir) => {
                let inside = tokio::fs::canonicalize(dir)
                    .await
                    .is_ok_and(|d| d.starts_with(&services.export_root));
                if !inside {
                    tracing::warn!(run_id, "export folder outside the export root: no manifest");
                    continue;
                }
                let path = dir.join(MANIFEST);
                let tmp = dir.join(format!(".{MANIFEST}.tmp-{run_id}"));
                tokio::fs::write(&tmp, &body).await?;
                tokio::fs::rename(&tmp, &path).await?;
                path.to_string_lossy().into_owned()
            }
            Place::S3 { bucket, prefix } => {
                let conn_id = first_instance
                    .get(&place)
                    .and_then(|id| instances.get(id))
                    .and_then(|ti| input_field(ti, "aws_conn_id"))
                    .unwrap_or_else(|| "aws_default".to_string());
                let store = services.connections.aws(&conn_id).await?.store()?;
                let key = format!("{prefix}{MANIFEST}");
                store
                    .put_bytes(bucket, &key, body.clone(), "application/json")
                    .await?;
                format!("s3://{bucket}/{key}")
            }
        };
        if let Some(ti) = first_instance.get(&place) {
            db.replace_artifact(&crate::store::connections::NewArtifact {
                run_id,
                task_instance_id: *ti,
                uri: &uri,
                bytes: body.len() as i64,
                sha256: &sha,
                rows_written: None,
            })
            .await?;
        }
        written.push(uri);
    }
    Ok(written)
}

fn file_entry(name: &str, a: &ArtifactRow, ti: Option<&TiRow>) -> Value {
    let input: Value = ti
        .and_then(|t| t.input.as_deref())
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(Value::Null);
    json!({
        "name": name,
        "bytes": a.bytes,
        "sha256": a.sha256,
        "rows": a.rows_written,
        "task_id": ti.map(|t| t.task_id.clone()),
        "map_key": ti.and_then(|t| t.map_key.clone()),
        "try_number": ti.map(|t| t.try_number),
        "study_key": input.get("study_key"),
        "connection_id": input.get("imednet_conn_id").or_else(|| input.get("conn_id")),
        "format": input.get("format").or_else(|| input.get("export_func")),
        "export_kwargs": input.get("export_kwargs"),
        "started_at": utc(ti.and_then(|t| t.started_at)),
        "ended_at": utc(ti.and_then(|t| t.ended_at)),
        "written_at": utc(Some(a.created_at)),
    })
}

fn input_field(ti: &TiRow, name: &str) -> Option<String> {
    let input: Value = serde_json::from_str(ti.input.as_deref()?).ok()?;
    input.get(name)?.as_str().map(str::to_string)
}

fn utc(ms: Option<i64>) -> Value {
    ms.and_then(crate::store::utc_text)
        .map_or(Value::Null, Value::String)
}

/// One file's outcome when a folder is checked against its manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileCheck {
    pub name: String,
    /// `ok`, `missing`, `size differs`, `sha256 differs`.
    pub outcome: String,
}

/// Re-hashes every file a local folder's manifest lists (streamed from disk).
pub fn verify_dir(dir: &Path) -> anyhow::Result<Vec<FileCheck>> {
    use anyhow::Context;
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    check_files(&path.display().to_string(), &text, |name| {
        hash_file(&dir.join(name)).ok()
    })
}

/// Re-hashes every object an S3 prefix's manifest lists (`s3://bucket/prefix/`), through
/// `store`. Objects are read whole, one at a time.
pub async fn verify_s3(
    store: &crate::objstore::S3Store,
    url: &str,
) -> anyhow::Result<Vec<FileCheck>> {
    let (bucket, prefix) = crate::objstore::parse_s3_url(url)?;
    let prefix = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let where_ = format!("s3://{bucket}/{prefix}{MANIFEST}");
    let text = store
        .get_bytes(&bucket, &format!("{prefix}{MANIFEST}"))
        .await?;
    let names: Vec<String> = serde_json::from_slice::<Value>(&text)
        .ok()
        .and_then(|m| m["files"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    let mut hashes = BTreeMap::new();
    for name in names.iter().filter(|n| plain_name(n)) {
        if let Ok(body) = store.get_bytes(&bucket, &format!("{prefix}{name}")).await {
            hashes.insert(
                name.clone(),
                (body.len() as u64, hex(&Sha256::digest(&body))),
            );
        }
    }
    check_files(&where_, &text, |name| hashes.get(name).cloned())
}

/// A manifest names files beside it, never elsewhere.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// Checks a manifest's file list against `hash(name) → (bytes, sha256)`.
fn check_files(
    where_: &str,
    manifest: &[u8],
    mut hash: impl FnMut(&str) -> Option<(u64, String)>,
) -> anyhow::Result<Vec<FileCheck>> {
    use anyhow::Context;
    let manifest: Value =
        serde_json::from_slice(manifest).with_context(|| format!("{where_} is not JSON"))?;
    anyhow::ensure!(
        manifest["format"] == FORMAT,
        "{where_} is not a trialflow export manifest (format {})",
        manifest["format"]
    );
    let files = manifest["files"]
        .as_array()
        .with_context(|| format!("{where_} lists no files"))?;
    let mut checks = Vec::new();
    for f in files {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let outcome = if !plain_name(&name) {
            "invalid name"
        } else {
            match hash(&name) {
                None => "missing",
                Some((bytes, _)) if Some(bytes) != f["bytes"].as_u64() => "size differs",
                Some((_, sha)) if Some(sha.as_str()) != f["sha256"].as_str() => "sha256 differs",
                Some(_) => "ok",
            }
        };
        checks.push(FileCheck {
            name,
            outcome: outcome.to_string(),
        });
    }
    Ok(checks)
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_grouped_by_folder_and_prefix() {
        assert_eq!(
            Place::of("/x/exports/reference/run-2/DEMO.csv"),
            Some((
                Place::Local(PathBuf::from("/x/exports/reference/run-2")),
                "DEMO.csv".into()
            ))
        );
        assert_eq!(
            Place::of("s3://bkt/wide/cv3b.csv"),
            Some((
                Place::S3 {
                    bucket: "bkt".into(),
                    prefix: "wide/".into()
                },
                "cv3b.csv".into()
            ))
        );
        assert_eq!(
            Place::of("s3://bkt/top.csv"),
            Some((
                Place::S3 {
                    bucket: "bkt".into(),
                    prefix: String::new()
                },
                "top.csv".into()
            ))
        );
    }

    #[test]
    fn verify_names_missing_changed_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "a,b\n1,2\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "x\n").unwrap();
        let (a_len, a_sha) = hash_file(&dir.path().join("a.csv")).unwrap();
        let manifest = json!({"format": FORMAT, "files": [
            {"name": "a.csv", "bytes": a_len, "sha256": a_sha},
            {"name": "b.csv", "bytes": 2, "sha256": "00"},
            {"name": "c.csv", "bytes": 1, "sha256": "00"},
            {"name": "../etc/passwd", "bytes": 1, "sha256": "00"},
        ]});
        std::fs::write(dir.path().join(MANIFEST), manifest.to_string()).unwrap();
        let outcomes: Vec<String> = verify_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|c| c.outcome)
            .collect();
        assert_eq!(
            outcomes,
            ["ok", "sha256 differs", "missing", "invalid name"]
        );
        std::fs::write(dir.path().join(MANIFEST), "{}").unwrap();
        assert!(
            verify_dir(dir.path())
                .unwrap_err()
                .to_string()
                .contains("not a trialflow export manifest")
        );
    }
}
