//! Where pipelines come from: the ones shipped in the binary, a folder of YAML files, and
//! registration through the API. Each is validated before it is stored.
use super::spec::{Pipeline, SpecError, parse_pipeline};
use crate::operators::OperatorRegistry;
use crate::store::Db;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Pipelines shipped inside the binary.
const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin/example_mapped.yaml",
        include_str!("../../pipelines/example_mapped.yaml"),
    ),
    (
        "builtin/example_retries.yaml",
        include_str!("../../pipelines/example_retries.yaml"),
    ),
    (
        "builtin/imednet_multi_study_reference.yaml",
        include_str!("../../pipelines/imednet_multi_study_reference.yaml"),
    ),
];

#[derive(Default)]
pub struct Catalog {
    pipelines: RwLock<BTreeMap<String, Arc<Pipeline>>>,
}

impl Catalog {
    pub fn get(&self, id: &str) -> Option<Arc<Pipeline>> {
        self.pipelines.read().ok()?.get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Pipeline>> {
        self.pipelines
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&self, p: Pipeline) -> Arc<Pipeline> {
        let p = Arc::new(p);
        if let Ok(mut m) = self.pipelines.write() {
            m.insert(p.id().to_string(), p.clone());
        }
        p
    }

    /// The pipeline `id`, also when another process (a server, the CLI) registered it after this
    /// one started.
    pub async fn find(&self, db: &Db, id: &str) -> Option<Arc<Pipeline>> {
        if let Some(p) = self.get(id) {
            return Some(p);
        }
        let row = db.pipeline_row(id).await.ok().flatten()?;
        if !stored_origin(&row.origin) {
            return None;
        }
        serde_json::from_str::<Pipeline>(&row.spec)
            .ok()
            .map(|p| self.insert(p))
    }

    /// Validates and stores one pipeline. `allow_admin_only` is false for callers below admin.
    pub async fn register(
        &self,
        db: &Db,
        registry: &OperatorRegistry,
        file: &str,
        source: &str,
        origin: &str,
        allow_admin_only: bool,
    ) -> Result<Arc<Pipeline>, SpecError> {
        let pipeline = parse_pipeline(file, source, registry)?;
        if pipeline.admin_only && !allow_admin_only {
            return Err(SpecError {
                file: file.to_string(),
                line: None,
                message:
                    "this pipeline runs commands (operator `command`); only admins may register it"
                        .into(),
            });
        }
        let spec = serde_json::to_string(&pipeline).map_err(|e| SpecError {
            file: file.to_string(),
            line: None,
            message: e.to_string(),
        })?;
        db.upsert_pipeline(pipeline.id(), source, origin, &spec)
            .await
            .map_err(|e| SpecError {
                file: file.to_string(),
                line: None,
                message: format!("storing the pipeline failed: {e}"),
            })?;
        Ok(self.insert(pipeline))
    }

    /// Loads the shipped pipelines and those of `folder`; a bad file is reported and skipped.
    pub async fn load(
        &self,
        db: &Db,
        registry: &OperatorRegistry,
        folder: Option<&Path>,
    ) -> Vec<SpecError> {
        let mut errors = Vec::new();
        for (file, source) in BUILTIN {
            if let Err(e) = self
                .register(db, registry, file, source, "builtin", true)
                .await
            {
                errors.push(e);
            }
        }
        if let Some(dir) = folder {
            let mut files: Vec<_> = match std::fs::read_dir(dir) {
                Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
                Err(e) => {
                    errors.push(SpecError {
                        file: dir.display().to_string(),
                        line: None,
                        message: format!("cannot read the pipelines folder: {e}"),
                    });
                    Vec::new()
                }
            };
            files.sort();
            for path in files
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            {
                let file = path.display().to_string();
                match std::fs::read_to_string(&path) {
                    Ok(source) => {
                        if let Err(e) = self
                            .register(db, registry, &file, &source, "folder", true)
                            .await
                        {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(SpecError {
                        file,
                        line: None,
                        message: format!("cannot read: {e}"),
                    }),
                }
            }
        }
        // Pipelines registered through the API by other processes or earlier starts.
        if let Ok(rows) = db.pipeline_rows().await {
            for row in rows.into_iter().filter(|r| stored_origin(&r.origin)) {
                if self.get(&row.id).is_none()
                    && let Ok(p) = serde_json::from_str::<Pipeline>(&row.spec)
                {
                    self.insert(p);
                }
            }
        }
        errors
    }
}

/// Pipelines that live only in the database (registered over the API or as flows).
fn stored_origin(origin: &str) -> bool {
    matches!(origin, "api" | "flow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_pipeline_is_valid() {
        let registry = OperatorRegistry::with_builtin();
        for (file, source) in BUILTIN {
            let p = parse_pipeline(file, source, &registry)
                .unwrap_or_else(|e| panic!("{file} does not load: {e}"));
            assert!(!p.admin_only, "{file} must be runnable without an admin");
        }
    }

    #[test]
    fn the_reference_pipeline_matches_the_seed() {
        let (file, source) = BUILTIN
            .iter()
            .find(|(f, _)| f.ends_with("imednet_multi_study_reference.yaml"))
            .expect("shipped");
        let p = parse_pipeline(file, source, &OperatorRegistry::with_builtin()).expect("valid");
        assert_eq!((p.spec.max_active_runs, p.spec.max_active_tasks), (1, 8));
        let discover = p.task("discover_studies").expect("discovery");
        assert_eq!(discover.retries, 1);
        assert_eq!(discover.retry_delay.to_string(), "2m");
        assert_eq!(
            discover.execution_timeout.map(|d| d.to_string()).as_deref(),
            Some("5m")
        );
        let export = p.task("export_records").expect("export");
        assert_eq!(export.operator, "imednet.export");
        assert_eq!(export.pool, "imednet_exports");
        assert_eq!(export.retries, 3);
        assert_eq!(export.retry_delay.to_string(), "10m");
        assert_eq!(
            export.execution_timeout.map(|d| d.to_string()).as_deref(),
            Some("30m")
        );
        assert_eq!(p.upstream["export_records"], vec!["discover_studies"]);
    }
}
