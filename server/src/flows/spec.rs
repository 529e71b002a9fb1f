//! Flows of flows as YAML, in LUME-services' field names: parsed, checked against the registered
//! flows and resolved into a [`Composition`] that says which child feeds which parameter.
//!
//! Every problem found is reported, not only the first, each as `file:line: message` naming the
//! flow and parameter. Unknown keys are errors at any level: a misspelt `map_typ` would otherwise
//! silently turn into a raw mapping.
use super::results::{RECORD_ATTRIBUTES, canonical_json, sha256_hex};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use std::collections::HashMap;
use std::fmt;

/// What is wrong with a flow-of-flows file, and where (the same shape as a pipeline's errors).
pub use crate::engine::spec::SpecError;
pub use crate::yaml_lines::Seg;
use crate::yaml_lines::{duplicate_key_line, locate};

/// The registered flows a composition may use.
pub trait FlowCatalog {
    fn flow(&self, project: &str, name: &str) -> Option<FlowShape>;
}

/// What composition needs to know about a registered flow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowShape {
    pub params: Vec<ChildParam>,
    pub tasks: Vec<(String, Produces)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildParam {
    pub name: String,
    pub required: bool,
}

/// What a task's result is, as far as its operator can tell before running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produces {
    /// A plain value: only `raw` mappings fit.
    Value,
    /// A [`super::files::FileRef`]: `file` (or `raw`) mappings fit.
    FileRef,
    /// A [`super::results::ResultRef`]: `db` (or `raw`) mappings fit.
    ResultRef,
    /// The operator cannot say (a command, a template): every map type is accepted here and the
    /// value is checked when the child runs, rather than refusing flows that may be right.
    Unknown,
}

impl Produces {
    fn describe(self) -> &'static str {
        match self {
            Produces::Value => "a plain value",
            Produces::FileRef => "a file reference",
            Produces::ResultRef => "a result reference",
            Produces::Unknown => "an unknown kind of value",
        }
    }
}

/// How a parent task's result becomes a child's parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapType {
    /// The result as it is.
    #[default]
    Raw,
    /// The result is a file reference; the child receives it to load.
    File,
    /// The result is a result reference; the child receives the record, walked by
    /// `attribute_index`.
    Db,
}

impl MapType {
    pub const ALL: [MapType; 3] = [MapType::Raw, MapType::File, MapType::Db];

    pub fn as_str(self) -> &'static str {
        match self {
            MapType::Raw => "raw",
            MapType::File => "file",
            MapType::Db => "db",
        }
    }

    /// Exact, lowercase names only, as written in the YAML.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn accepts(self, produces: Produces) -> bool {
        matches!(
            (self, produces),
            (MapType::Raw, _)
                | (_, Produces::Unknown)
                | (MapType::File, Produces::FileRef)
                | (MapType::Db, Produces::ResultRef)
        )
    }

    fn needs(self) -> &'static str {
        match self {
            MapType::Raw => "any value",
            MapType::File => "a file reference",
            MapType::Db => "a result reference",
        }
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated flow of flows: children in run order, each with what feeds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Composition {
    pub name: String,
    pub project: String,
    /// Sorted and without repeats: labels are a set (which workers may run it).
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    pub name: String,
    pub project: String,
    /// Position in `children` (and in the YAML list), from 0.
    pub index: usize,
    /// Indices of the children this one maps parameters from: sorted, each once, all smaller than
    /// `index`.
    pub depends_on: Vec<usize>,
    /// By child parameter, in the YAML's order.
    pub mappings: IndexMap<String, Mapping>,
    /// The child's unmapped parameters, in the flow's order, as the composed flow takes them.
    pub exposed_params: Vec<ExposedParam>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub parent_index: usize,
    pub parent_flow: String,
    pub parent_task: String,
    pub map_type: MapType,
    /// Only for `db`; empty means the whole record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute_index: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedParam {
    /// `<flow>-<param>`, unique within the composition.
    pub top_level_name: String,
    pub param: String,
    pub required: bool,
}

impl Composition {
    /// The same composition always gives the same bytes (keys sorted at every depth, so the order
    /// `mapped_parameters` were written in does not matter), so registering it twice is a no-op.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a composition has only text keys");
        canonical_json(&value)
    }

    /// SHA-256 (lowercase hex) of [`Self::canonical_json`].
    pub fn version_hash(&self) -> String {
        sha256_hex(self.canonical_json().as_bytes())
    }

    pub fn child(&self, name: &str) -> Option<&Child> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every parameter the composed flow takes at run time, child by child.
    pub fn exposed_params(&self) -> impl Iterator<Item = &ExposedParam> {
        self.children.iter().flat_map(|c| c.exposed_params.iter())
    }
}

const TOP_KEYS: [&str; 5] = [
    "name",
    "project_name",
    "labels",
    "description",
    "composing_flows",
];
const CHILD_KEYS: [&str; 3] = ["name", "project_name", "mapped_parameters"];
const MAPPING_KEYS: [&str; 5] = [
    "parent_flow_name",
    "parent_task_name",
    "map_type",
    "attribute_index",
    "parent_project_name",
];

/// Parses a flow of flows and checks it against the catalog; on failure, every problem found.
pub fn parse_flow_of_flows(
    file: &str,
    source: &str,
    catalog: &dyn FlowCatalog,
) -> Result<Composition, Vec<SpecError>> {
    let syntax = |e: serde_yaml_ng::Error| vec![syntax_error(file, source, &e)];
    let mut doc: Yaml = serde_yaml_ng::from_str(source).map_err(syntax)?;
    // Anchors and `<<` merges let repeated mappings be written once.
    doc.apply_merge().map_err(syntax)?;
    let mut checker = Checker {
        file,
        source,
        errors: Vec::new(),
    };
    let draft = checker.read_document(&doc);
    let composition = checker.resolve(draft, catalog);
    let mut errors = checker.errors;
    if errors.is_empty() {
        return Ok(composition);
    }
    // Reading order, whatever order the checks ran in; whole-file errors first.
    errors.sort_by_key(|e| e.line);
    Err(errors)
}

/// A name that can appear in paths, URLs and `<flow>-<param>` without quoting.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.chars().count() > 200 {
        return Some("is longer than 200 characters".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.chars().all(allowed) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some(format!(
            "'{name}' may use letters, digits, '_', '-' and '.', starting with a letter or digit"
        ));
    }
    None
}

fn describe_yaml(value: &Yaml) -> String {
    match value {
        Yaml::Null => "nothing".into(),
        Yaml::Bool(b) => format!("the boolean {b}"),
        Yaml::Number(n) => format!("the number {n}"),
        Yaml::String(s) => format!("the text '{s}'"),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

const FLOWS: Seg<'static> = Seg::Key("composing_flows");

fn at<'a>(path: &[Seg<'a>], next: Seg<'a>) -> Vec<Seg<'a>> {
    let mut path = path.to_vec();
    path.push(next);
    path
}

/// What the YAML said, before the catalog is asked. `None` fields were missing or wrong: the
/// error is already reported and later checks that need them are skipped, so one mistake gives
/// one error.
#[derive(Default)]
struct Draft<'v> {
    name: Option<String>,
    project: Option<String>,
    labels: Vec<String>,
    description: String,
    children: Vec<DraftChild<'v>>,
}

#[derive(Default)]
struct DraftChild<'v> {
    name: Option<String>,
    project: Option<String>,
    mappings: Vec<DraftMapping<'v>>,
}

struct DraftMapping<'v> {
    param: &'v str,
    parent_flow: Option<String>,
    parent_task: Option<String>,
    parent_project: Option<String>,
    /// `None` when the map type given was not understood (already reported).
    map_type: Option<MapType>,
    attribute_index: Vec<Value>,
}

/// Collects errors while reading; each knows its line from its path.
struct Checker<'s> {
    file: &'s str,
    source: &'s str,
    errors: Vec<SpecError>,
}

impl Checker<'_> {
    fn report(&mut self, path: &[Seg], message: String) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line: locate(self.source, path),
            message,
        });
    }

    /// The entries of a mapping with text keys, reporting keys outside `allowed` (when given);
    /// `None` (reported) when the value is not a mapping at all.
    fn entries<'v>(
        &mut self,
        value: &'v Yaml,
        path: &[Seg],
        context: &str,
        allowed: Option<&[&str]>,
    ) -> Option<Vec<(&'v str, &'v Yaml)>> {
        let map = match value {
            Yaml::Mapping(map) => map,
            Yaml::Null => return Some(Vec::new()),
            other => {
                self.report(
                    path,
                    format!(
                        "{context}: expected a mapping, found {}",
                        describe_yaml(other)
                    ),
                );
                return None;
            }
        };
        let mut entries = Vec::new();
        for (key, value) in map {
            match key.as_str() {
                Some(key) if allowed.is_none_or(|a| a.contains(&key)) => entries.push((key, value)),
                Some(key) => self.report(
                    &at(path, Seg::Key(key)),
                    format!(
                        "{context}: unknown key '{key}'; allowed: {}",
                        allowed.unwrap_or_default().join(", ")
                    ),
                ),
                None => self.report(
                    path,
                    format!("{context}: keys must be text, found {}", describe_yaml(key)),
                ),
            }
        }
        Some(entries)
    }

    fn required<'v>(
        &mut self,
        entries: &[(&str, &'v Yaml)],
        key: &str,
        path: &[Seg],
        context: &str,
    ) -> Option<&'v Yaml> {
        let found = lookup(entries, key);
        if found.is_none() {
            self.report(path, format!("{context}: missing '{key}'"));
        }
        found
    }

    fn text(&mut self, value: &Yaml, path: &[Seg], what: &str) -> Option<String> {
        match value {
            Yaml::String(s) => Some(s.clone()),
            other => {
                self.report(
                    path,
                    format!("{what} must be text, found {}", describe_yaml(other)),
                );
                None
            }
        }
    }

    fn name(&mut self, value: &Yaml, path: &[Seg], what: &str) -> Option<String> {
        let name = self.text(value, path, what)?;
        match name_problem(&name) {
            None => Some(name),
            Some(problem) => {
                self.report(path, format!("{what} {problem}"));
                None
            }
        }
    }

    fn read_document<'v>(&mut self, doc: &'v Yaml) -> Draft<'v> {
        let mut draft = Draft::default();
        if !doc.is_mapping() {
            self.report(
                &[],
                format!(
                    "expected a flow of flows (a mapping with name, project_name and composing_flows), found {}",
                    describe_yaml(doc)
                ),
            );
            return draft;
        }
        let top = "top level";
        let entries = self
            .entries(doc, &[], top, Some(&TOP_KEYS))
            .unwrap_or_default();
        if let Some(v) = self.required(&entries, "name", &[], top) {
            draft.name = self.name(v, &[Seg::Key("name")], "name");
        }
        if let Some(v) = self.required(&entries, "project_name", &[], top) {
            draft.project = self.name(v, &[Seg::Key("project_name")], "project_name");
        }
        if let Some(v) = lookup(&entries, "labels") {
            draft.labels = self.read_labels(v);
        }
        if let Some(v) = lookup(&entries, "description").filter(|v| !v.is_null()) {
            let path = [Seg::Key("description")];
            draft.description = self.text(v, &path, "description").unwrap_or_default();
        }
        match self.required(&entries, "composing_flows", &[], top) {
            Some(Yaml::Sequence(items)) if items.is_empty() => {
                self.report(&[FLOWS], "composing_flows needs at least one flow".into())
            }
            Some(Yaml::Sequence(items)) => {
                draft.children = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.read_child(i, item))
                    .collect();
            }
            Some(other) => self.report(
                &[FLOWS],
                format!(
                    "composing_flows must be a list of flows, found {}",
                    describe_yaml(other)
                ),
            ),
            None => {}
        }
        draft
    }

    fn read_labels(&mut self, value: &Yaml) -> Vec<String> {
        let path = [Seg::Key("labels")];
        let items = match value {
            Yaml::Sequence(items) => items,
            Yaml::Null => return Vec::new(),
            other => {
                self.report(
                    &path,
                    format!(
                        "labels must be a list of text, found {}",
                        describe_yaml(other)
                    ),
                );
                return Vec::new();
            }
        };
        let mut labels = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(label) = self.text(item, &path, &format!("labels[{i}]")) else {
                continue;
            };
            if label.trim().is_empty() {
                self.report(&path, format!("labels[{i}] is empty"));
            } else {
                labels.push(label);
            }
        }
        labels.sort();
        labels.dedup();
        labels
    }

    fn read_child<'v>(&mut self, i: usize, item: &'v Yaml) -> DraftChild<'v> {
        let path = [FLOWS, Seg::Item(i)];
        let mut child = DraftChild::default();
        let numbered = format!("composing_flows item {}", i + 1);
        if !item.is_mapping() {
            self.report(
                &path,
                format!(
                    "{numbered}: expected a mapping with name and project_name, found {}",
                    describe_yaml(item)
                ),
            );
            return child;
        }
        // The name first, so that every later message can say which flow it is about.
        if let Some(v) = item.get("name") {
            child.name = self.name(
                v,
                &at(&path, Seg::Key("name")),
                &format!("{numbered}: name"),
            );
        }
        let context = match &child.name {
            Some(name) => format!("flow '{name}'"),
            None => numbered,
        };
        let entries = self
            .entries(item, &path, &context, Some(&CHILD_KEYS))
            .unwrap_or_default();
        self.required(&entries, "name", &path, &context);
        if let Some(v) = self.required(&entries, "project_name", &path, &context) {
            let what = format!("{context}: project_name");
            child.project = self.name(v, &at(&path, Seg::Key("project_name")), &what);
        }
        if let Some(v) = lookup(&entries, "mapped_parameters") {
            let path = at(&path, Seg::Key("mapped_parameters"));
            let params = self.entries(v, &path, &context, None).unwrap_or_default();
            for (param, spec) in params {
                let mapping = self.read_mapping(&context, &at(&path, Seg::Key(param)), param, spec);
                child.mappings.push(mapping);
            }
        }
        child
    }

    fn read_mapping<'v>(
        &mut self,
        context: &str,
        path: &[Seg],
        param: &'v str,
        spec: &'v Yaml,
    ) -> DraftMapping<'v> {
        let label = format!("{context} parameter '{param}'");
        if param.is_empty() {
            self.report(
                path,
                format!("{context}: a mapped parameter has an empty name"),
            );
        }
        let mut mapping = DraftMapping {
            param,
            parent_flow: None,
            parent_task: None,
            parent_project: None,
            map_type: None,
            attribute_index: Vec::new(),
        };
        let Some(entries) = self.entries(spec, path, &label, Some(&MAPPING_KEYS)) else {
            return mapping;
        };
        let name_of = |this: &mut Self, key: &str, required: bool| {
            let value = if required {
                this.required(&entries, key, path, &label)
            } else {
                lookup(&entries, key)
            };
            value.and_then(|v| this.name(v, &at(path, Seg::Key(key)), &format!("{label}: {key}")))
        };
        mapping.parent_flow = name_of(self, "parent_flow_name", true);
        mapping.parent_task = name_of(self, "parent_task_name", true);
        mapping.parent_project = name_of(self, "parent_project_name", false);

        mapping.map_type = match lookup(&entries, "map_type") {
            None => Some(MapType::Raw),
            Some(v) => {
                let path = at(path, Seg::Key("map_type"));
                let text = self.text(v, &path, &format!("{label}: map_type"));
                let parsed = text.as_deref().and_then(MapType::parse);
                if let (Some(text), None) = (&text, parsed) {
                    let allowed: Vec<&str> = MapType::ALL.iter().map(|t| t.as_str()).collect();
                    self.report(
                        &path,
                        format!(
                            "{label}: unknown map_type '{text}'; use one of {}",
                            allowed.join(", ")
                        ),
                    );
                }
                parsed
            }
        };

        if let Some(v) = lookup(&entries, "attribute_index") {
            let path = at(path, Seg::Key("attribute_index"));
            match mapping.map_type {
                Some(MapType::Db) => {
                    mapping.attribute_index = self.read_attribute_index(v, &path, &label);
                }
                Some(other) => self.report(
                    &path,
                    format!("{label}: attribute_index applies only to map_type db, not {other}"),
                ),
                // The map type is already reported; its attribute_index cannot be judged.
                None => {}
            }
        }
        mapping
    }

    fn read_attribute_index(&mut self, value: &Yaml, path: &[Seg], label: &str) -> Vec<Value> {
        let steps = match value {
            Yaml::Sequence(steps) => steps,
            Yaml::Null => return Vec::new(),
            other => {
                self.report(
                    path,
                    format!(
                        "{label}: attribute_index must be a list, found {}",
                        describe_yaml(other)
                    ),
                );
                return Vec::new();
            }
        };
        let mut index = Vec::new();
        for (j, step) in steps.iter().enumerate() {
            let parsed = match (j, step) {
                (0, Yaml::String(s)) if RECORD_ATTRIBUTES.contains(&s.as_str()) => {
                    Some(Value::from(s.as_str()))
                }
                (0, other) => {
                    self.report(
                        path,
                        format!(
                            "{label}: attribute_index must start with a record attribute ({}), found {}",
                            RECORD_ATTRIBUTES.join(", "),
                            describe_yaml(other)
                        ),
                    );
                    None
                }
                (_, Yaml::String(s)) => Some(Value::from(s.as_str())),
                (_, Yaml::Number(n)) if n.as_u64().is_some() => n.as_u64().map(Value::from),
                (_, other) => {
                    self.report(
                        path,
                        format!(
                            "{label}: attribute_index[{j}] must be an object key (text) or a list index (a non-negative integer), found {}",
                            describe_yaml(other)
                        ),
                    );
                    None
                }
            };
            index.extend(parsed);
        }
        index
    }

    /// The checks that need the whole list and the catalog.
    fn resolve(&mut self, draft: Draft, catalog: &dyn FlowCatalog) -> Composition {
        let name_path = |i: usize| [FLOWS, Seg::Item(i), Seg::Key("name")];
        let mut position: HashMap<&str, usize> = HashMap::new();
        for (i, child) in draft.children.iter().enumerate() {
            let Some(name) = child.name.as_deref() else {
                continue;
            };
            // Mappings and exposed parameters are keyed by flow name, so a second entry would be
            // ambiguous even in another project.
            match position.get(name) {
                Some(first) => self.report(
                    &name_path(i),
                    format!(
                        "flow '{name}' is listed twice in composing_flows (items {} and {}); list each flow once",
                        first + 1,
                        i + 1
                    ),
                ),
                None => {
                    position.insert(name, i);
                }
            }
            if draft.name.as_deref() == Some(name)
                && child.project.is_some()
                && child.project == draft.project
            {
                self.report(
                    &name_path(i),
                    format!("flow '{name}': a flow of flows cannot list itself"),
                );
            }
        }

        let shapes: Vec<Option<FlowShape>> = draft
            .children
            .iter()
            .enumerate()
            .map(|(i, child)| {
                let (name, project) = (child.name.as_deref()?, child.project.as_deref()?);
                let shape = catalog.flow(project, name);
                if shape.is_none() {
                    self.report(
                        &name_path(i),
                        format!("flow '{name}' is not registered in project '{project}'"),
                    );
                }
                shape
            })
            .collect();

        let mut children = Vec::new();
        let mut exposed_by: HashMap<String, String> = HashMap::new();
        for (ci, child) in draft.children.iter().enumerate() {
            let context = match &child.name {
                Some(name) => format!("flow '{name}'"),
                None => format!("composing_flows item {}", ci + 1),
            };
            let mut mappings = IndexMap::new();
            for m in &child.mappings {
                let path = [
                    FLOWS,
                    Seg::Item(ci),
                    Seg::Key("mapped_parameters"),
                    Seg::Key(m.param),
                ];
                let key_path = |key| at(&path, Seg::Key(key));
                let label = format!("{context} parameter '{}'", m.param);
                if let Some(shape) = &shapes[ci]
                    && !shape.params.iter().any(|p| p.name == m.param)
                {
                    self.report(
                        &path,
                        format!(
                            "{label}: the flow has no such parameter; it takes {}",
                            list_or_none(shape.params.iter().map(|p| p.name.as_str()))
                        ),
                    );
                }
                let Some(parent) = m.parent_flow.as_deref() else {
                    continue;
                };
                if child.name.as_deref() == Some(parent) {
                    self.report(
                        &key_path("parent_flow_name"),
                        format!("{label}: maps from its own flow; a flow cannot feed itself"),
                    );
                    continue;
                }
                let Some(&pi) = position.get(parent) else {
                    self.report(
                        &key_path("parent_flow_name"),
                        format!(
                            "{label}: parent flow '{parent}' is not one of composing_flows (listed: {})",
                            list_or_none(draft.children.iter().filter_map(|c| c.name.as_deref()))
                        ),
                    );
                    continue;
                };
                if pi > ci {
                    self.report(
                        &key_path("parent_flow_name"),
                        format!(
                            "{label}: parent flow '{parent}' is listed after this flow (item {} vs item {}); list a parent before the flows it feeds",
                            pi + 1,
                            ci + 1
                        ),
                    );
                }
                let parent_project = draft.children[pi].project.as_deref();
                if let (Some(given), Some(actual)) = (m.parent_project.as_deref(), parent_project)
                    && given != actual
                {
                    self.report(
                        &key_path("parent_project_name"),
                        format!(
                            "{label}: parent_project_name '{given}' does not match project '{actual}' of flow '{parent}'"
                        ),
                    );
                }
                let (Some(task), Some(map_type)) = (m.parent_task.as_deref(), m.map_type) else {
                    continue;
                };
                if let Some(shape) = &shapes[pi] {
                    match shape.tasks.iter().find(|(t, _)| t == task) {
                        None => self.report(
                            &key_path("parent_task_name"),
                            format!(
                                "{label}: flow '{parent}' has no task '{task}'; its tasks: {}",
                                list_or_none(shape.tasks.iter().map(|(t, _)| t.as_str()))
                            ),
                        ),
                        Some((_, produces)) if !map_type.accepts(*produces) => self.report(
                            &key_path("map_type"),
                            format!(
                                "{label}: map_type {map_type} needs a task producing {}, but task '{task}' of flow '{parent}' produces {}",
                                map_type.needs(),
                                produces.describe()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                mappings.insert(
                    m.param.to_string(),
                    Mapping {
                        parent_index: pi,
                        parent_flow: parent.to_string(),
                        parent_task: task.to_string(),
                        map_type,
                        attribute_index: m.attribute_index.clone(),
                    },
                );
            }

            let mut exposed_params = Vec::new();
            if let (Some(name), Some(shape)) = (&child.name, &shapes[ci]) {
                for p in &shape.params {
                    if child.mappings.iter().any(|m| m.param == p.name) {
                        continue;
                    }
                    let top_level_name = format!("{name}-{}", p.name);
                    let owner = format!("flow '{name}' parameter '{}'", p.name);
                    if let Some(other) = exposed_by.get(&top_level_name) {
                        self.report(
                            &name_path(ci),
                            format!(
                                "{owner} would be exposed as '{top_level_name}', which {other} already is; rename one of them"
                            ),
                        );
                    }
                    exposed_by.insert(top_level_name.clone(), owner);
                    exposed_params.push(ExposedParam {
                        top_level_name,
                        param: p.name.clone(),
                        required: p.required,
                    });
                }
            }

            let mut depends_on: Vec<usize> = mappings.values().map(|m| m.parent_index).collect();
            depends_on.sort_unstable();
            depends_on.dedup();
            children.push(Child {
                name: child.name.clone().unwrap_or_default(),
                project: child.project.clone().unwrap_or_default(),
                index: ci,
                depends_on,
                mappings,
                exposed_params,
            });
        }

        Composition {
            name: draft.name.unwrap_or_default(),
            project: draft.project.unwrap_or_default(),
            labels: draft.labels,
            description: draft.description,
            children,
        }
    }
}

fn lookup<'v>(entries: &[(&str, &'v Yaml)], key: &str) -> Option<&'v Yaml> {
    entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A parse error at the line the parser gives, moved to the repeated key for duplicates (the
/// parser points at the start of the mapping that holds them).
fn syntax_error(file: &str, source: &str, error: &serde_yaml_ng::Error) -> SpecError {
    let text = error.to_string();
    let message = text
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .to_string();
    let line = error.location().map(|loc| {
        duplicate_key_line(source, loc.line(), loc.column(), &message).unwrap_or(loc.line())
    });
    SpecError {
        file: file.to_string(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests;
