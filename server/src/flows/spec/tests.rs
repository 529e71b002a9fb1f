use super::*;
use crate::flows::results::{ResultRecord, walk_attribute_index};
use serde_json::json;

/// Registered flows: the flows.md example's (project `trials`), the acceptance chain's (`lume`),
/// a same-named flow in another project, and two whose exposed names would collide (`x`).
struct Catalog(Vec<(&'static str, &'static str, FlowShape)>);

impl FlowCatalog for Catalog {
    fn flow(&self, project: &str, name: &str) -> Option<FlowShape> {
        self.0
            .iter()
            .find(|(p, n, _)| *p == project && *n == name)
            .map(|(_, _, shape)| shape.clone())
    }
}

fn shape(params: &[(&str, bool)], tasks: &[(&str, Produces)]) -> FlowShape {
    FlowShape {
        params: params
            .iter()
            .map(|(name, required)| ChildParam {
                name: name.to_string(),
                required: *required,
            })
            .collect(),
        tasks: tasks.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
    }
}

fn catalog() -> Catalog {
    use Produces::*;
    Catalog(vec![
        (
            "trials",
            "export_all",
            shape(
                &[("export_root", false), ("connection", true)],
                &[("discover", Value), ("export_records", FileRef)],
            ),
        ),
        (
            "trials",
            "summarize",
            shape(
                &[("files", true), ("title", false)],
                &[
                    ("load", Value),
                    ("save_summary", ResultRef),
                    ("notes", Unknown),
                ],
            ),
        ),
        (
            "trials",
            "publish",
            shape(
                &[("row_count", true), ("channel", false)],
                &[("post", Value)],
            ),
        ),
        ("other", "export_all", shape(&[], &[("run", Value)])),
        (
            "lume",
            "flow1",
            shape(
                &[("text1", true), ("text2", true), ("filename", true)],
                &[("append", Value), ("save_file", FileRef)],
            ),
        ),
        (
            "lume",
            "flow2",
            shape(
                &[("file_rep", true)],
                &[("load_file", Value), ("save_result", ResultRef)],
            ),
        ),
        (
            "lume",
            "flow3",
            shape(
                &[("text1", true), ("text2", true)],
                &[("check_equal", Value)],
            ),
        ),
        ("x", "a", shape(&[("b-c", true)], &[])),
        ("x", "a-b", shape(&[("c", false)], &[])),
    ])
}

/// The example of docs/flows.md, unchanged.
const EXAMPLE: &str = r#"name: nightly_qc
project_name: trials
labels: [exports]
composing_flows:
  - name: export_all
    project_name: trials
  - name: summarize
    project_name: trials
    mapped_parameters:
      files:                      # child parameter name
        parent_flow_name: export_all
        parent_task_name: export_records
        map_type: file
  - name: publish
    project_name: trials
    mapped_parameters:
      row_count:
        parent_flow_name: summarize
        parent_task_name: save_summary
        map_type: db
        attribute_index: [outputs, total_rows]
"#;

const CHAIN: &str = r#"name: chain
project_name: lume
description: flow1 writes a file, flow2 saves it as a result, flow3 checks it
composing_flows:
  - name: flow1
    project_name: lume
  - name: flow2
    project_name: lume
    mapped_parameters:
      file_rep:
        parent_flow_name: flow1
        parent_task_name: save_file
        map_type: file
  - name: flow3
    project_name: lume
    mapped_parameters:
      text1:
        parent_flow_name: flow2
        parent_task_name: save_result
        map_type: db
        attribute_index: [outputs, output1]
"#;

fn parse(src: &str) -> Result<Composition, Vec<SpecError>> {
    parse_flow_of_flows("f.yaml", src, &catalog())
}

/// The errors of a source that must fail, as `file:line: message` lines.
fn errors(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(c) => panic!("expected errors, parsed {c:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// `EXAMPLE` with one piece replaced (which must be there, so a stale test cannot pass).
fn example_with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from:?} not in the example");
    EXAMPLE.replacen(from, to, 1)
}

fn exposed(child: &str, params: &[(&str, bool)]) -> Vec<ExposedParam> {
    params
        .iter()
        .map(|(p, required)| ExposedParam {
            top_level_name: format!("{child}-{p}"),
            param: p.to_string(),
            required: *required,
        })
        .collect()
}

fn mapping(
    parent_index: usize,
    parent_flow: &str,
    parent_task: &str,
    map_type: MapType,
    attribute_index: Vec<Value>,
) -> Mapping {
    Mapping {
        parent_index,
        parent_flow: parent_flow.into(),
        parent_task: parent_task.into(),
        map_type,
        attribute_index,
    }
}

#[test]
fn the_flows_md_example_composes() {
    let c = parse(EXAMPLE).unwrap();
    let expected = Composition {
        name: "nightly_qc".into(),
        project: "trials".into(),
        labels: vec!["exports".into()],
        description: String::new(),
        children: vec![
            Child {
                name: "export_all".into(),
                project: "trials".into(),
                index: 0,
                depends_on: vec![],
                mappings: IndexMap::new(),
                exposed_params: exposed(
                    "export_all",
                    &[("export_root", false), ("connection", true)],
                ),
            },
            Child {
                name: "summarize".into(),
                project: "trials".into(),
                index: 1,
                depends_on: vec![0],
                mappings: IndexMap::from([(
                    "files".to_string(),
                    mapping(0, "export_all", "export_records", MapType::File, vec![]),
                )]),
                exposed_params: exposed("summarize", &[("title", false)]),
            },
            Child {
                name: "publish".into(),
                project: "trials".into(),
                index: 2,
                depends_on: vec![1],
                mappings: IndexMap::from([(
                    "row_count".to_string(),
                    mapping(
                        1,
                        "summarize",
                        "save_summary",
                        MapType::Db,
                        vec![json!("outputs"), json!("total_rows")],
                    ),
                )]),
                exposed_params: exposed("publish", &[("channel", false)]),
            },
        ],
    };
    assert_eq!(c, expected);
    let names: Vec<&str> = c
        .exposed_params()
        .map(|p| p.top_level_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "export_all-export_root",
            "export_all-connection",
            "summarize-title",
            "publish-channel"
        ]
    );
}

#[test]
fn the_acceptance_chain_composes_and_flow3_gets_the_mapped_value() {
    let c = parse(CHAIN).unwrap();
    assert_eq!(
        c.description,
        "flow1 writes a file, flow2 saves it as a result, flow3 checks it"
    );
    let deps: Vec<(&str, &[usize])> = c
        .children
        .iter()
        .map(|ch| (ch.name.as_str(), ch.depends_on.as_slice()))
        .collect();
    assert_eq!(
        deps,
        [("flow1", &[][..]), ("flow2", &[0][..]), ("flow3", &[1][..])]
    );
    assert_eq!(
        c.children[0].exposed_params,
        exposed(
            "flow1",
            &[("text1", true), ("text2", true), ("filename", true)]
        )
    );
    let flow2 = c.child("flow2").unwrap();
    assert_eq!(
        flow2.mappings["file_rep"],
        mapping(0, "flow1", "save_file", MapType::File, vec![])
    );
    assert!(flow2.exposed_params.is_empty());
    let flow3 = c.child("flow3").unwrap();
    assert_eq!(
        flow3.mappings["text1"],
        mapping(
            1,
            "flow2",
            "save_result",
            MapType::Db,
            vec![json!("outputs"), json!("output1")]
        )
    );
    assert_eq!(flow3.exposed_params, exposed("flow3", &[("text2", true)]));

    // What flow2 would save, walked with flow3's mapping, is the text flow3 checks.
    let record = ResultRecord::new(
        "flow2-id",
        "lume",
        crate::flows::results::GENERIC_RESULT_TYPE,
        json!({"input1": "hey you"}),
        json!({"output1": "hey you"}),
        1_700_000_000_000,
    );
    let value = walk_attribute_index(&record, &flow3.mappings["text1"].attribute_index).unwrap();
    assert_eq!(value, json!("hey you"));
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    let src = r#"name: q
project_name: trials
colour: blue
composing_flows:
  - name: export_all
    project_name: trials
    image: x
  - name: summarize
    project_name: trials
    mapped_parameters:
      files:
        parent_flow_name: export_all
        parent_task_name: export_records
        map_typ: file
"#;
    assert_eq!(
        errors(src),
        [
            "f.yaml:3: top level: unknown key 'colour'; allowed: name, project_name, labels, description, composing_flows",
            "f.yaml:7: flow 'export_all': unknown key 'image'; allowed: name, project_name, mapped_parameters",
            "f.yaml:14: flow 'summarize' parameter 'files': unknown key 'map_typ'; allowed: parent_flow_name, parent_task_name, map_type, attribute_index, parent_project_name",
        ]
    );
}

#[test]
fn missing_keys_are_named_at_their_parent() {
    let src = r#"project_name: trials
composing_flows:
  - project_name: trials
  - name: summarize
    mapped_parameters:
      files:
        map_type: file
"#;
    assert_eq!(
        errors(src),
        [
            "f.yaml: top level: missing 'name'",
            "f.yaml:3: composing_flows item 1: missing 'name'",
            "f.yaml:4: flow 'summarize': missing 'project_name'",
            "f.yaml:6: flow 'summarize' parameter 'files': missing 'parent_flow_name'",
            "f.yaml:6: flow 'summarize' parameter 'files': missing 'parent_task_name'",
        ]
    );
}

#[test]
fn names_must_be_non_empty_and_safe() {
    let src = r#"name: "nightly qc"
project_name: ""
composing_flows:
  - name: ../etc
    project_name: trials
  - name: summarize
    project_name: -x
    mapped_parameters:
      files:
        parent_flow_name: 12
        parent_task_name: "a/b"
"#;
    let rule = "may use letters, digits, '_', '-' and '.', starting with a letter or digit";
    assert_eq!(
        errors(src),
        [
            format!("f.yaml:1: name 'nightly qc' {rule}"),
            "f.yaml:2: project_name is empty".to_string(),
            format!("f.yaml:4: composing_flows item 1: name '../etc' {rule}"),
            format!("f.yaml:7: flow 'summarize': project_name '-x' {rule}"),
            "f.yaml:10: flow 'summarize' parameter 'files': parent_flow_name must be text, found the number 12".to_string(),
            format!("f.yaml:11: flow 'summarize' parameter 'files': parent_task_name 'a/b' {rule}"),
        ]
    );
    let long = "n".repeat(201);
    assert_eq!(
        errors(&example_with("name: nightly_qc", &format!("name: {long}"))),
        ["f.yaml:1: name is longer than 200 characters"]
    );
}

#[test]
fn the_document_and_the_list_must_have_the_right_shape() {
    let expected_top =
        "expected a flow of flows (a mapping with name, project_name and composing_flows)";
    assert_eq!(
        errors(""),
        [format!("f.yaml: {expected_top}, found nothing")]
    );
    assert_eq!(
        errors("- a\n"),
        [format!("f.yaml: {expected_top}, found a list")]
    );
    assert_eq!(
        errors("name: n\nproject_name: trials\ncomposing_flows: []\n"),
        ["f.yaml:3: composing_flows needs at least one flow"]
    );
    assert_eq!(
        errors("name: n\nproject_name: trials\ncomposing_flows: x\n"),
        ["f.yaml:3: composing_flows must be a list of flows, found the text 'x'"]
    );
    assert_eq!(
        errors("name: n\nproject_name: trials\ncomposing_flows:\n  - export_all\n"),
        [
            "f.yaml:4: composing_flows item 1: expected a mapping with name and project_name, found the text 'export_all'"
        ]
    );
    assert_eq!(
        errors(&example_with(
            "labels: [exports]",
            "labels: [exports, \"\", 3]"
        )),
        [
            "f.yaml:3: labels[1] is empty",
            "f.yaml:3: labels[2] must be text, found the number 3"
        ]
    );
    assert_eq!(
        errors(&example_with("labels: [exports]", "description: 5\n1: x")),
        [
            "f.yaml: top level: keys must be text, found the number 1",
            "f.yaml:3: description must be text, found the number 5"
        ]
    );
    assert_eq!(
        errors(&example_with(
            "      files:                      # child parameter name\n        parent_flow_name: export_all\n        parent_task_name: export_records\n        map_type: file\n",
            "      files: export_all\n"
        )),
        [
            "f.yaml:10: flow 'summarize' parameter 'files': expected a mapping, found the text 'export_all'"
        ]
    );
}

#[test]
fn a_child_flow_must_be_registered_in_its_project() {
    assert_eq!(
        errors(&example_with(
            "  - name: publish\n    project_name: trials",
            "  - name: publish\n    project_name: other"
        )),
        ["f.yaml:14: flow 'publish' is not registered in project 'other'"]
    );
}

#[test]
fn a_mapped_parameter_must_exist_in_the_child() {
    assert_eq!(
        errors(&example_with("      files:", "      filez:")),
        [
            "f.yaml:10: flow 'summarize' parameter 'filez': the flow has no such parameter; it takes files, title"
        ]
    );
}

#[test]
fn a_parent_must_be_listed_and_come_first() {
    assert_eq!(
        errors(&example_with(
            "parent_flow_name: export_all",
            "parent_flow_name: export_al"
        )),
        [
            "f.yaml:11: flow 'summarize' parameter 'files': parent flow 'export_al' is not one of composing_flows (listed: export_all, summarize, publish)"
        ]
    );
    assert_eq!(
        errors(&example_with(
            "        parent_flow_name: export_all\n        parent_task_name: export_records\n        map_type: file",
            "        parent_flow_name: publish\n        parent_task_name: post\n        map_type: raw"
        )),
        [
            "f.yaml:11: flow 'summarize' parameter 'files': parent flow 'publish' is listed after this flow (item 3 vs item 2); list a parent before the flows it feeds"
        ]
    );
}

#[test]
fn self_reference_is_refused() {
    assert_eq!(
        errors(&example_with(
            "parent_flow_name: summarize",
            "parent_flow_name: publish"
        )),
        [
            "f.yaml:18: flow 'publish' parameter 'row_count': maps from its own flow; a flow cannot feed itself"
        ]
    );
    // A flow of flows registered under the name of one of its children would replace it.
    assert_eq!(
        errors(&example_with("name: nightly_qc", "name: summarize")),
        ["f.yaml:7: flow 'summarize': a flow of flows cannot list itself"]
    );
    // The same name in another project is another flow.
    let elsewhere = example_with(
        "name: nightly_qc\nproject_name: trials",
        "name: summarize\nproject_name: other",
    );
    assert_eq!(parse(&elsewhere).unwrap().name, "summarize");
}

#[test]
fn a_flow_listed_twice_is_refused_even_in_another_project() {
    let src = format!("{EXAMPLE}  - name: export_all\n    project_name: other\n");
    assert_eq!(
        errors(&src),
        [
            "f.yaml:22: flow 'export_all' is listed twice in composing_flows (items 1 and 4); list each flow once"
        ]
    );
}

#[test]
fn the_parent_task_must_exist() {
    assert_eq!(
        errors(&example_with(
            "parent_task_name: export_records",
            "parent_task_name: export_recs"
        )),
        [
            "f.yaml:12: flow 'summarize' parameter 'files': flow 'export_all' has no task 'export_recs'; its tasks: discover, export_records"
        ]
    );
}

#[test]
fn parent_project_name_is_accepted_when_it_matches() {
    let matching = example_with(
        "        map_type: file\n",
        "        map_type: file\n        parent_project_name: trials\n",
    );
    assert_eq!(parse(&matching).unwrap(), parse(EXAMPLE).unwrap());
    assert_eq!(
        errors(&example_with(
            "        map_type: file\n",
            "        map_type: file\n        parent_project_name: other\n"
        )),
        [
            "f.yaml:14: flow 'summarize' parameter 'files': parent_project_name 'other' does not match project 'trials' of flow 'export_all'"
        ]
    );
}

#[test]
fn map_types_are_named_exactly() {
    let allowed = "use one of raw, file, db";
    for bad in ["blob", "DB", "Raw"] {
        assert_eq!(
            errors(&example_with("map_type: file", &format!("map_type: {bad}"))),
            [format!(
                "f.yaml:13: flow 'summarize' parameter 'files': unknown map_type '{bad}'; {allowed}"
            )]
        );
    }
    assert_eq!(
        errors(&example_with("map_type: file", "map_type: 3")),
        [
            "f.yaml:13: flow 'summarize' parameter 'files': map_type must be text, found the number 3"
        ]
    );
    // No map_type means raw.
    let raw = parse(&example_with("        map_type: file\n", "")).unwrap();
    assert_eq!(raw.children[1].mappings["files"].map_type, MapType::Raw);
}

#[test]
fn attribute_index_goes_only_with_db() {
    assert_eq!(
        errors(&example_with(
            "        map_type: file\n",
            "        map_type: file\n        attribute_index: [outputs]\n"
        )),
        [
            "f.yaml:14: flow 'summarize' parameter 'files': attribute_index applies only to map_type db, not file"
        ]
    );
    assert_eq!(
        errors(&example_with("        map_type: db\n", "")),
        [
            "f.yaml:20: flow 'publish' parameter 'row_count': attribute_index applies only to map_type db, not raw"
        ]
    );
    // With an unknown map type only the map type is reported.
    assert_eq!(
        errors(&example_with("map_type: db", "map_type: dB")).len(),
        1
    );
}

#[test]
fn attribute_index_steps_are_checked() {
    let label = "f.yaml:21: flow 'publish' parameter 'row_count'";
    let step_rule = "must be an object key (text) or a list index (a non-negative integer)";
    assert_eq!(
        errors(&example_with(
            "[outputs, total_rows]",
            "[output, -1, 1.5, {a: 1}, rows, 0]"
        )),
        [
            format!(
                "{label}: attribute_index must start with a record attribute (inputs, outputs, flow_id, date_modified, unique_hash, result_type_string, project_name), found the text 'output'"
            ),
            format!("{label}: attribute_index[1] {step_rule}, found the number -1"),
            format!("{label}: attribute_index[2] {step_rule}, found the number 1.5"),
            format!("{label}: attribute_index[3] {step_rule}, found a mapping"),
        ]
    );
    assert_eq!(
        errors(&example_with("[outputs, total_rows]", "outputs")),
        [format!(
            "{label}: attribute_index must be a list, found the text 'outputs'"
        )]
    );
    let mixed = parse(&example_with(
        "[outputs, total_rows]",
        "[outputs, rows, 0, \"1\"]",
    ))
    .unwrap();
    assert_eq!(
        mixed.children[2].mappings["row_count"].attribute_index,
        vec![json!("outputs"), json!("rows"), json!(0), json!("1")]
    );
    // Empty and absent both mean the whole record.
    let whole = parse(&example_with("[outputs, total_rows]", "[]")).unwrap();
    assert!(
        whole.children[2].mappings["row_count"]
            .attribute_index
            .is_empty()
    );
}

#[test]
fn the_map_type_must_fit_what_the_parent_task_produces() {
    assert_eq!(
        errors(&example_with(
            "parent_task_name: export_records",
            "parent_task_name: discover"
        )),
        [
            "f.yaml:13: flow 'summarize' parameter 'files': map_type file needs a task producing a file reference, but task 'discover' of flow 'export_all' produces a plain value"
        ]
    );
    assert_eq!(
        errors(&example_with(
            "parent_task_name: save_summary",
            "parent_task_name: load"
        )),
        [
            "f.yaml:20: flow 'publish' parameter 'row_count': map_type db needs a task producing a result reference, but task 'load' of flow 'summarize' produces a plain value"
        ]
    );
    assert_eq!(
        errors(&example_with(
            "        parent_flow_name: summarize\n        parent_task_name: save_summary",
            "        parent_flow_name: export_all\n        parent_task_name: export_records"
        )),
        [
            "f.yaml:20: flow 'publish' parameter 'row_count': map_type db needs a task producing a result reference, but task 'export_records' of flow 'export_all' produces a file reference"
        ]
    );
    // A task that cannot say what it produces is accepted for file and db.
    let unknown = parse(&example_with(
        "parent_task_name: save_summary",
        "parent_task_name: notes",
    ))
    .unwrap();
    assert_eq!(
        unknown.children[2].mappings["row_count"].parent_task,
        "notes"
    );
    // Raw takes anything: a plain value, a file reference, a result reference.
    for (flow, task) in [
        ("export_all", "discover"),
        ("export_all", "export_records"),
        ("summarize", "save_summary"),
    ] {
        let src = example_with(
            "        parent_flow_name: summarize\n        parent_task_name: save_summary\n        map_type: db\n        attribute_index: [outputs, total_rows]\n",
            &format!("        parent_flow_name: {flow}\n        parent_task_name: {task}\n"),
        );
        let c = parse(&src).unwrap();
        assert_eq!(c.children[2].mappings["row_count"].map_type, MapType::Raw);
    }
}

#[test]
fn exposed_names_must_not_collide() {
    let src = "name: clash\nproject_name: x\ncomposing_flows:\n  - name: a\n    project_name: x\n  - name: a-b\n    project_name: x\n";
    assert_eq!(
        errors(src),
        [
            "f.yaml:6: flow 'a-b' parameter 'c' would be exposed as 'a-b-c', which flow 'a' parameter 'b-c' already is; rename one of them"
        ]
    );
}

#[test]
fn every_problem_is_reported_in_reading_order() {
    let src = example_with(
        "  - name: publish\n    project_name: trials",
        "  - name: publish\n    project_name: other",
    )
    .replacen("map_type: file", "map_type: blob", 1)
    .replacen(
        "parent_flow_name: export_all",
        "parent_flow_name: publish",
        1,
    )
    .replacen("labels: [exports]", "labels: [exports]\ncolour: blue", 1);
    assert_eq!(
        errors(&src),
        [
            "f.yaml:4: top level: unknown key 'colour'; allowed: name, project_name, labels, description, composing_flows",
            "f.yaml:12: flow 'summarize' parameter 'files': parent flow 'publish' is listed after this flow (item 3 vs item 2); list a parent before the flows it feeds",
            "f.yaml:14: flow 'summarize' parameter 'files': unknown map_type 'blob'; use one of raw, file, db",
            "f.yaml:15: flow 'publish' is not registered in project 'other'",
        ]
    );
}

#[test]
fn yaml_errors_give_the_line() {
    assert_eq!(
        errors(&example_with(
            "map_type: file\n",
            "map_type: file\n        map_type: raw\n"
        )),
        [
            "f.yaml:14: composing_flows[1].mapped_parameters.files: duplicate entry with key \"map_type\""
        ]
    );
    assert_eq!(
        errors(&example_with("labels: [exports]", "labels: [exports")),
        ["f.yaml:4: did not find expected ',' or ']'"]
    );
}

#[test]
fn anchors_and_merges_are_resolved() {
    let src = example_with(
        "      files:                      # child parameter name\n        parent_flow_name: export_all",
        "      files: &from_export\n        parent_flow_name: export_all",
    )
    .replacen(
        "      row_count:\n        parent_flow_name: summarize\n        parent_task_name: save_summary\n        map_type: db\n        attribute_index: [outputs, total_rows]\n",
        "      row_count:\n        <<: *from_export\n        map_type: raw\n",
        1,
    );
    let c = parse(&src).unwrap();
    assert_eq!(
        c.children[2].mappings["row_count"],
        mapping(0, "export_all", "export_records", MapType::Raw, vec![])
    );
    assert_eq!(c.children[2].depends_on, [0]);
}

#[test]
fn canonical_json_is_the_same_for_the_same_composition() {
    let a = parse(CHAIN).unwrap();
    assert_eq!(a.canonical_json(), parse(CHAIN).unwrap().canonical_json());
    assert_eq!(a.version_hash().len(), 64);
    assert!(
        a.version_hash()
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    );

    // Mapping keys in another order, labels repeated and reordered: the same composition.
    let extra = "      text2:\n        parent_flow_name: flow1\n        parent_task_name: append\n";
    let first =
        format!("{CHAIN}{extra}").replacen("description:", "labels: [b, a]\ndescription:", 1);
    let second = CHAIN
        .replacen(
            "    mapped_parameters:\n      text1:",
            &format!("    mapped_parameters:\n{extra}      text1:"),
            1,
        )
        .replacen("description:", "labels: [a, b, a]\ndescription:", 1)
        .replacen(
            "        parent_flow_name: flow2\n        parent_task_name: save_result\n",
            "        parent_task_name: save_result\n        parent_flow_name: flow2\n",
            1,
        );
    let (first, second) = (parse(&first).unwrap(), parse(&second).unwrap());
    assert_eq!(
        first.children[2].mappings.keys().collect::<Vec<_>>(),
        ["text1", "text2"]
    );
    assert_eq!(
        second.children[2].mappings.keys().collect::<Vec<_>>(),
        ["text2", "text1"]
    );
    assert_eq!(first.labels, ["a", "b"]);
    assert_eq!(first.canonical_json(), second.canonical_json());
    assert_eq!(first.version_hash(), second.version_hash());
    assert_ne!(first.version_hash(), a.version_hash());

    let changed = parse(&CHAIN.replacen("map_type: file", "map_type: raw", 1)).unwrap();
    assert_ne!(changed.version_hash(), a.version_hash());

    // Stored as JSON and read back unchanged.
    let back: Composition = serde_json::from_str(&a.canonical_json()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn canonical_json_has_a_fixed_form() {
    let c = parse(
        "name: solo\nproject_name: lume\ncomposing_flows:\n  - {name: flow3, project_name: lume}\n",
    )
    .unwrap();
    assert_eq!(
        c.canonical_json(),
        r#"{"children":[{"depends_on":[],"exposed_params":[{"param":"text1","required":true,"top_level_name":"flow3-text1"},{"param":"text2","required":true,"top_level_name":"flow3-text2"}],"index":0,"mappings":{},"name":"flow3","project":"lume"}],"labels":[],"name":"solo","project":"lume"}"#
    );
    assert_eq!(
        c.version_hash(),
        crate::flows::results::sha256_hex(c.canonical_json().as_bytes())
    );
}

#[test]
fn locate_follows_keys_and_list_items() {
    let src = "# a comment\nname: x\n\ncomposing_flows:\n- name: a\n  mapped_parameters:\n    p: {parent_flow_name: b}\n-\n  name: b\n  project_name: q\nlast: 1\n";
    let flows = Seg::Key("composing_flows");
    assert_eq!(locate(src, &[Seg::Key("name")]), Some(2));
    assert_eq!(locate(src, &[flows]), Some(4));
    assert_eq!(locate(src, &[flows, Seg::Item(0)]), Some(5));
    assert_eq!(
        locate(src, &[flows, Seg::Item(0), Seg::Key("name")]),
        Some(5)
    );
    assert_eq!(
        locate(src, &[flows, Seg::Item(1), Seg::Key("name")]),
        Some(9)
    );
    assert_eq!(
        locate(src, &[flows, Seg::Item(1), Seg::Key("project_name")]),
        Some(10)
    );
    // Inside a flow-style map: the key that holds it.
    let deep = [
        flows,
        Seg::Item(0),
        Seg::Key("mapped_parameters"),
        Seg::Key("p"),
        Seg::Key("parent_flow_name"),
    ];
    assert_eq!(locate(src, &deep), Some(7));
    // Not found below: the deepest found; a key of another item is not taken.
    assert_eq!(
        locate(src, &[flows, Seg::Item(0), Seg::Key("project_name")]),
        Some(5)
    );
    assert_eq!(locate(src, &[flows, Seg::Item(2)]), Some(4));
    assert_eq!(locate(src, &[Seg::Key("last")]), Some(11));
    assert_eq!(locate(src, &[Seg::Key("absent")]), None);
    assert_eq!(locate(src, &[]), None);
    // Quoted keys, and keys nested deeper are not direct children.
    let quoted = "top:\n  inner:\n    \"k\": 1\n  'k': 2\n";
    assert_eq!(locate(quoted, &[Seg::Key("top"), Seg::Key("k")]), Some(4));
}

#[test]
fn depends_on_lists_each_parent_once_in_list_order() {
    let from = |param: &str, flow: &str, task: &str| {
        format!(
            "      {param}:\n        parent_flow_name: {flow}\n        parent_task_name: {task}\n"
        )
    };
    let flow3 = "  - name: flow3\n    project_name: lume\n    mapped_parameters:\n";
    let head = CHAIN.split("  - name: flow3\n").next().unwrap();
    let both_from_flow1 = format!(
        "{head}{flow3}{}{}",
        from("text1", "flow1", "append"),
        from("text2", "flow1", "save_file")
    );
    let c = parse(&both_from_flow1).unwrap();
    assert_eq!(c.children[2].depends_on, [0]);
    assert!(c.children[2].exposed_params.is_empty());
    let later_parent_first = format!(
        "{head}{flow3}{}{}",
        from("text1", "flow2", "save_result"),
        from("text2", "flow1", "append")
    );
    assert_eq!(
        parse(&later_parent_first).unwrap().children[2].depends_on,
        [0, 1]
    );
}
