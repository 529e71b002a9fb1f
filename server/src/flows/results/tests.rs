use super::*;
use serde_json::json;

/// What flow2 of the acceptance chain saves.
fn record() -> ResultRecord {
    ResultRecord::new(
        "f1",
        "lume",
        GENERIC_RESULT_TYPE,
        json!({"input1": "hey you"}),
        json!({"output1": "hey you", "rows": [10, {"n": 20}], "empty": {}}),
        1_700_000_000_123,
    )
}

fn walk(index: Value) -> Result<Value, String> {
    let steps = index.as_array().cloned().unwrap_or_default();
    walk_attribute_index(&record(), &steps).map_err(|e| e.to_string())
}

#[test]
fn canonical_json_sorts_keys_at_every_depth_without_whitespace() {
    let value =
        json!({"b": 1, "a": {"d": [3, {"z": null, "y": true}], "c": "x\"y"}, "é": 1.5, "A": -2});
    assert_eq!(
        canonical_json(&value),
        r#"{"A":-2,"a":{"c":"x\"y","d":[3,{"y":true,"z":null}]},"b":1,"é":1.5}"#
    );
    assert_eq!(canonical_json(&json!([])), "[]");
    assert_eq!(canonical_json(&json!({})), "{}");
    assert_eq!(canonical_json(&json!("a\nb")), r#""a\nb""#);
}

#[test]
fn unique_hash_is_sha256_of_the_canonical_identity() {
    // Checked with Python: json.dumps(sort_keys=True, separators=(",", ":")) then hashlib.sha256.
    assert_eq!(
        unique_hash(
            "f1",
            &json!({"input1": "hey you"}),
            &json!({"output1": "hey you"})
        ),
        "ec3f024ea3af39ce46969f2aece60b7747c25585c3e77030f07bb08ca03e8203"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn unique_hash_ignores_key_order_and_sees_every_part() {
    let a: Value = serde_json::from_str(r#"{"x": 1, "y": {"p": [1, 2], "q": "s"}}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"y": {"q": "s", "p": [1, 2]}, "x": 1}"#).unwrap();
    let out = json!({"o": true});
    let base = unique_hash("f", &a, &out);
    assert_eq!(base, unique_hash("f", &b, &out));
    assert_ne!(base, unique_hash("g", &a, &out));
    assert_ne!(
        base,
        unique_hash("f", &json!({"x": 2, "y": {"p": [1, 2], "q": "s"}}), &out)
    );
    assert_ne!(
        base,
        unique_hash("f", &json!({"x": 1, "y": {"p": [2, 1], "q": "s"}}), &out)
    );
    assert_ne!(base, unique_hash("f", &a, &json!({"o": false})));
    // Inputs and outputs are not interchangeable.
    assert_ne!(unique_hash("f", &a, &out), unique_hash("f", &out, &a));
}

#[test]
fn a_record_hashes_its_content_only() {
    let r = record();
    assert_eq!(r.unique_hash, unique_hash("f1", &r.inputs, &r.outputs));
    assert!(r.hash_is_valid());
    let mut later = r.clone();
    later.date_modified_ms += 1;
    later.project_name = "elsewhere".into();
    assert!(
        later.hash_is_valid(),
        "date and project are not part of the identity"
    );
    let mut edited = r.clone();
    edited.outputs["output1"] = json!("bye");
    assert!(!edited.hash_is_valid());
}

#[test]
fn a_record_and_its_reference_have_fixed_json_shapes() {
    let r = record();
    let hash = r.unique_hash.clone();
    let whole = json!({
        "flow_id": "f1",
        "project_name": "lume",
        "inputs": {"input1": "hey you"},
        "outputs": {"output1": "hey you", "rows": [10, {"n": 20}], "empty": {}},
        "date_modified": 1_700_000_000_123_i64,
        "result_type_string": "trialflow:Result",
        "unique_hash": hash,
    });
    assert_eq!(r.to_json(), whole);
    assert_eq!(serde_json::to_value(&r).unwrap(), whole);
    assert_eq!(serde_json::from_value::<ResultRecord>(whole).unwrap(), r);

    let reference = json!({
        "project_name": "lume",
        "result_type_string": "trialflow:Result",
        "query": {"unique_hash": hash},
    });
    assert_eq!(serde_json::to_value(r.reference()).unwrap(), reference);
    assert_eq!(
        serde_json::from_value::<ResultRef>(reference.clone()).unwrap(),
        r.reference()
    );
    let mut extra = reference;
    extra["query"]["flow_id"] = json!("f1");
    let e = serde_json::from_value::<ResultRef>(extra).unwrap_err();
    assert!(e.to_string().starts_with("unknown field `flow_id`"), "{e}");
}

#[test]
fn walking_picks_attributes_keys_and_indices() {
    assert_eq!(walk(json!(["outputs", "output1"])), Ok(json!("hey you")));
    assert_eq!(walk(json!(["outputs", "rows", 1, "n"])), Ok(json!(20)));
    assert_eq!(walk(json!(["flow_id"])), Ok(json!("f1")));
    assert_eq!(
        walk(json!(["date_modified"])),
        Ok(json!(1_700_000_000_123_i64))
    );
    assert_eq!(walk(json!(["project_name"])), Ok(json!("lume")));
    assert_eq!(
        walk(json!(["result_type_string"])),
        Ok(json!("trialflow:Result"))
    );
    assert_eq!(
        walk(json!(["unique_hash"])),
        Ok(json!(record().unique_hash))
    );
    assert_eq!(walk(json!(["inputs"])), Ok(json!({"input1": "hey you"})));
    assert_eq!(walk(json!([])), Ok(record().to_json()));
    for attribute in RECORD_ATTRIBUTES {
        assert!(record().attribute(attribute).is_some(), "{attribute}");
    }
}

#[test]
fn walk_errors_name_the_step_and_what_was_there() {
    let attributes = RECORD_ATTRIBUTES.join(", ");
    assert_eq!(
        walk(json!(["output", "output1"])),
        Err(format!(
            "attribute_index[0] = \"output\": not a record attribute; use one of {attributes}"
        ))
    );
    assert_eq!(
        walk(json!([0])),
        Err(format!(
            "attribute_index[0] = 0: not a record attribute; use one of {attributes}"
        ))
    );
    assert_eq!(
        walk(json!(["outputs", "output9"])),
        Err(
            "attribute_index[1] = \"output9\": no such key; the object has empty, output1, rows"
                .into()
        )
    );
    assert_eq!(
        walk(json!(["outputs", "empty", "x"])),
        Err("attribute_index[2] = \"x\": no such key; the object is empty".into())
    );
    assert_eq!(
        walk(json!(["outputs", "rows", 2])),
        Err("attribute_index[2] = 2: no such index; the list has 2 items".into())
    );
    assert_eq!(
        walk(json!(["outputs", "output1", "x"])),
        Err("attribute_index[2] = \"x\": a key needs an object, found the text \"hey you\"".into())
    );
    assert_eq!(
        walk(json!(["outputs", "rows", "0"])),
        Err("attribute_index[2] = \"0\": a key needs an object, found a list of 2 items".into())
    );
    assert_eq!(
        walk(json!(["outputs", 0])),
        Err("attribute_index[1] = 0: an index needs a list, found an object with keys empty, output1, rows".into())
    );
    assert_eq!(
        walk(json!(["flow_id", 0])),
        Err("attribute_index[1] = 0: an index needs a list, found the text \"f1\"".into())
    );
    let bad = "a step after the first must be an object key (text) or a list index (a non-negative integer)";
    for segment in [
        json!(-1),
        json!(1.5),
        json!(true),
        json!(null),
        json!({"a": 1}),
        json!([0]),
    ] {
        assert_eq!(
            walk(json!(["outputs", segment])),
            Err(format!("attribute_index[1] = {segment}: {bad}"))
        );
    }
    let e =
        walk_attribute_index(&record(), &[json!("outputs"), json!("rows"), json!(5)]).unwrap_err();
    assert_eq!(
        (e.step, e.segment, e.problem),
        (2, json!(5), WalkProblem::OutOfRange { len: 2 })
    );
}

#[test]
fn big_values_are_described_briefly() {
    let many: serde_json::Map<String, Value> =
        (0..25).map(|i| (format!("k{i:02}"), json!(i))).collect();
    let r = ResultRecord::new(
        "f",
        "p",
        GENERIC_RESULT_TYPE,
        json!({}),
        Value::Object(many),
        0,
    );
    let e = walk_attribute_index(&r, &[json!("outputs"), json!("zz")]).unwrap_err();
    let first20: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    assert_eq!(
        e.to_string(),
        format!(
            "attribute_index[1] = \"zz\": no such key; the object has {} and 5 more",
            first20.join(", ")
        )
    );
    let e = walk_attribute_index(&r, &[json!("outputs"), json!(0)]).unwrap_err();
    let first10: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
    assert_eq!(
        e.to_string(),
        format!(
            "attribute_index[1] = 0: an index needs a list, found an object with keys {} and 15 more",
            first10.join(", ")
        )
    );
    assert_eq!(
        describe(&json!("é".repeat(41))),
        format!("the text \"{}…\"", "é".repeat(40))
    );
    assert_eq!(
        describe(&json!("é".repeat(40))),
        format!("the text \"{}\"", "é".repeat(40))
    );
    assert_eq!(describe(&json!([1])), "a list of 1 item");
    assert_eq!(describe(&json!({})), "an empty object");
    assert_eq!(describe(&json!(null)), "nothing (null)");
}
