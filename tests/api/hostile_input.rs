//! Hostile input, generated: every parser that takes text or JSON from a person or the network
//! (record filters, pipeline YAML, flow-of-flows YAML, trigger conf, export options, the
//! simulator's requests) gets mutated seeds and random input. None may panic; every rejection
//! must be an error that says what is wrong and where.
//!
//! Property tests rather than cargo-fuzz: cargo-fuzz needs a nightly toolchain, and this
//! machine has one stable toolchain. Cases per property: `TRIALFLOW_FUZZ_CASES` (256 in CI;
//! RELIABILITY.md reports a long run). A failing case is kept by proptest under
//! `tests/proptest-regressions/hostile_input.txt` and replayed first on every later run.
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use trialflow::engine::spec::parse_pipeline;
use trialflow::flows::spec::{FlowCatalog, FlowShape, parse_flow_of_flows};
use trialflow::imednet::filter::{Dialect, parse as parse_filter};

fn cases() -> u32 {
    std::env::var("TRIALFLOW_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

const PIPELINE_SEEDS: &[(&str, &str)] = &[
    (
        "example_mapped.yaml",
        include_str!("../../server/pipelines/example_mapped.yaml"),
    ),
    (
        "example_retries.yaml",
        include_str!("../../server/pipelines/example_retries.yaml"),
    ),
    (
        "imednet_multi_study_reference.yaml",
        include_str!("../../server/pipelines/imednet_multi_study_reference.yaml"),
    ),
];

const FLOW_SEEDS: &[(&str, &str)] = &[
    (
        "nightly_exports.yaml",
        include_str!("../../server/flows/nightly_exports.yaml"),
    ),
    (
        "export_studies.yaml",
        include_str!("../../server/flows/export_studies.yaml"),
    ),
];

const FILTER_SEEDS: &[&str] = &[
    "subjectStatus==Enrolled",
    "siteId>10;subjectKey=~'ABC%'",
    "dateModified>=2026-01-01T00:00:00Z,formKey!=AE",
    "(siteName==\"Site 1\" or siteName==\"Site 2\") and recordId<=300",
    "AGE>40;SEX=='F'",
];

/// A seed with a few random edits: bytes replaced, inserted or cut, at char boundaries.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 0..8);
    (prop::sample::select(seeds), edits).prop_map(|(seed, edits)| mutate(seed, &edits))
}

fn mutate(seed: &str, edits: &[(prop::sample::Index, u8, char)]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (at, kind, c) in edits {
        let i = at.index(chars.len() + 1);
        match kind {
            0 if i < chars.len() => chars[i] = *c,
            1 => chars.insert(i, *c),
            _ if i < chars.len() => {
                let end = (i + 1 + usize::from(*kind) * 7).min(chars.len());
                chars.drain(i..end);
            }
            _ => chars.push(*c),
        }
    }
    chars.into_iter().collect()
}

/// Text in the alphabet the parsers care about, so random input reaches deep.
fn soup(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..max).prop_map(|v| v.into_iter().collect())
}

fn operators() -> trialflow::operators::OperatorRegistry {
    trialflow::operators::OperatorRegistry::with_builtin()
}

struct Flows;

impl FlowCatalog for Flows {
    fn flow(&self, _project: &str, name: &str) -> Option<FlowShape> {
        (name == "export_studies").then(FlowShape::default)
    }
}

fn check_spec_error(
    file: &str,
    source: &str,
    line: Option<usize>,
    message: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(!message.trim().is_empty(), "empty message for {source:?}");
    if let Some(line) = line {
        // YAML counts a lone CR as a line break too (as editors do); an error at the very end
        // is on the line after the last break.
        let lines = source
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .lines()
            .count()
            .max(1);
        prop_assert!(
            line >= 1 && line <= lines + 1,
            "{file}: line {line} of {lines}: {message}"
        );
    }
    Ok(())
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        soup("abcSTUDY-_ 1/.%'\"\\\u{0}é", 12).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(soup("abcdefghijklmnopqrstuvwxyz_", 10), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn record_filters_parse_or_name_the_parameter(
        text in prop_oneof![mutated(FILTER_SEEDS), soup("abcAGE_.-=~!<>;,()'\"% 0123456789TZ:", 40)],
        record_data in any::<bool>(),
    ) {
        let dialect = if record_data { Dialect::RecordData } else { Dialect::Filter };
        if let Err(e) = parse_filter(&text, dialect) {
            prop_assert!(!e.message.trim().is_empty(), "no message for {text:?}");
            prop_assert!(!e.attribute.is_empty(), "no attribute for {text:?}");
        }
    }

    #[test]
    fn pipeline_yaml_parses_or_says_where_it_is_wrong(
        (file, text) in (prop::sample::select(PIPELINE_SEEDS), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 0..6))
            .prop_map(|((file, seed), edits)| (file, mutate(seed, &edits))),
    ) {
        if let Err(e) = parse_pipeline(file, &text, &operators()) {
            prop_assert_eq!(&e.file, file);
            check_spec_error(file, &text, e.line, &e.message)?;
        }
    }

    #[test]
    fn flow_of_flows_yaml_parses_or_says_where_it_is_wrong(
        (file, text) in (prop::sample::select(FLOW_SEEDS), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 0..6))
            .prop_map(|((file, seed), edits)| (file, mutate(seed, &edits))),
    ) {
        if let Err(errors) = parse_flow_of_flows(file, &text, &Flows) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert_eq!(&e.file, file);
                check_spec_error(file, &text, e.line, &e.message)?;
            }
        }
    }

    #[test]
    fn trigger_conf_resolves_or_names_each_bad_parameter(
        conf in prop::collection::btree_map(
            prop::sample::select(vec!["studies", "export_root", "output_format", "incremental", "conn", "nope"]),
            json_value(),
            0..5,
        ),
    ) {
        let pipeline = parse_pipeline(PIPELINE_SEEDS[2].0, PIPELINE_SEEDS[2].1, &operators())
            .expect("the reference pipeline is valid");
        let conf: Map<String, Value> = conf.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if let Err(errors) = trialflow::engine::params::resolve_conf(&pipeline.spec.params, &conf) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(!e.param.is_empty());
                prop_assert!(e.to_string().contains(&e.param), "{e} does not name {}", e.param);
            }
        }
    }

    #[test]
    fn export_options_are_taken_or_refused_by_name(
        options in prop_oneof![
            json_value(),
            prop::collection::btree_map(
                prop::sample::select([&trialflow::export::KNOWN_OPTIONS[..], &["unknown_option"]].concat()),
                json_value(),
                0..5,
            )
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ],
    ) {
        if let Err(message) = trialflow::export::ExportOptions::from_json(&options) {
            match &options {
                Value::Object(map) => prop_assert!(
                    map.keys().any(|k| message.contains(&format!("`{k}`"))),
                    "{message} names no option of {options}"
                ),
                _ => prop_assert!(message.starts_with("export options must be a JSON object"), "{message}"),
            }
        }
    }
}

mod simulator {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use trialflow::imednet::simulator::{SimConfig, SimState, router};

    fn query_part() -> impl Strategy<Value = String> {
        prop_oneof![
            soup(
                "abcdefghijklmnopqrstuvwxyzA-Z_=&%;,<>!~'\"()0123456789. ",
                30
            ),
            mutated(FILTER_SEEDS).prop_map(|f| format!("filter={}", percent_encode(&f))),
            (any::<i64>(), any::<i64>()).prop_map(|(p, s)| format!("page={p}&size={s}")),
            soup("0123456789-", 6).prop_map(|s| format!("size={s}&sort=recordId,desc")),
        ]
    }

    fn percent_encode(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn simulator_requests_get_an_answer_never_a_server_error(
            endpoint in prop::sample::select(vec!["records", "subjects", "sites", "forms", "variables", "intervals", "queries", "users", "visits", "record_revisions", "codings", "nope", "%00"]),
            study in prop::sample::select(vec!["PHARMADEMO", "CV-3B", "..", "%2F", "x"]),
            query in query_part(),
            post in any::<bool>(),
            body in soup("{}[]\":,abc0123 ", 40),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let state = SimState::new(SimConfig::default());
            let uri = format!("/api/v1/edc/studies/{study}/{endpoint}?{query}");
            let Ok(request) = Request::builder()
                .method(if post { "POST" } else { "GET" })
                .uri(&uri)
                .header("x-api-key", "demo-api-key")
                .header("x-imn-security-key", "demo-security-key")
                .header("content-type", "application/json")
                .body(Body::from(body))
            else {
                // Not a URI http accepts: no request reaches the server.
                return Ok(());
            };
            let response = runtime.block_on(router(state).oneshot(request)).unwrap();
            prop_assert!(
                response.status().as_u16() < 500,
                "{} for {uri}", response.status()
            );
        }
    }
}
