//! Flows of flows: pipelines composed into a larger flow whose children receive parameters mapped
//! from the results of their parents' tasks (raw values, file references, stored results).
//!
//! `registry` registers versioned flows and compiles flows of flows into pipelines, `runner`
//! runs them and returns results, `spec` parses and validates the composition YAML, `results` is the result-record model (canonical
//! hash, references, `attribute_index` walks), `files` is file references and the filesystems they
//! resolve against.
pub mod files;
pub mod registry;
pub mod results;
pub mod runner;
pub mod spec;
