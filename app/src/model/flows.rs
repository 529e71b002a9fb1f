//! Flows of flows as the console and the HTTP API show them.
use serde::{Deserialize, Serialize};

/// The newest version of a registered flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    pub flow_id: i64,
    pub project: String,
    pub name: String,
    pub version: i64,
    /// pipeline or composition.
    pub kind: String,
    pub labels: String,
    /// JSON: name → {type, default, required}.
    pub parameters: String,
    pub created_at: i64,
    pub created_by: String,
}

/// A flow with its source and, for a flow of flows, its children and mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowDetail {
    pub info: FlowInfo,
    pub source: String,
    pub children: Vec<ChildInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub name: String,
    pub project: String,
    pub mappings: Vec<MappingInfo>,
    /// Top-level names of the child's unmapped parameters (`<flow>-<param>`).
    pub exposed: Vec<String>,
}

/// One mapped parameter: an edge of the composition graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingInfo {
    pub param: String,
    pub parent_flow: String,
    pub parent_task: String,
    pub map_type: String,
    /// JSON list, empty unless `db`.
    pub attribute_index: String,
}

/// What registering answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRegistered {
    pub flow_id: i64,
    pub project: String,
    pub name: String,
    pub version: i64,
    pub kind: String,
    /// False when the same definition was registered before (nothing changed).
    pub created: bool,
}
