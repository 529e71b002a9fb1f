use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn sensitive_keys_match_any_case_and_separator() {
    for key in [
        "password",
        "PASSWORD",
        "db_password",
        "Passwd",
        "api_key",
        "Api-Key",
        "apiKey",
        "X-API-KEY",
        "x-imn-security-key",
        "securityKey",
        "security_key",
        "Authorization",
        "access_token",
        "refresh_token",
        "client_secret",
        "aws_secret_access_key",
        "private_key_id",
        "keyfile_dict",
        "service_account_json",
        "ssh-passphrase",
    ] {
        assert!(is_sensitive_key(key), "{key}");
    }
    for key in [
        "login",
        "host",
        "base_url",
        "study_key",
        "api_url",
        "port",
        "key",
        "region",
    ] {
        assert!(!is_sensitive_key(key), "{key}");
    }
}

#[test]
fn every_json_type_under_a_sensitive_key_is_masked() {
    let input = json!({
        "imednet_conn_id": "imednet_default",
        "base_url": "https://edc.example.com",
        "api_key": "AK-123456",
        "security_key": 987654321,
        "password": true,
        "token": null,
        "secret": 1.5,
        "client_secret": ["a", {"b": "c"}],
        "private_key": {"pem": "-----BEGIN", "n": 3},
        "nested": [{"headers": {"x-imn-security-key": "SK-1", "Accept": "json"}}, 42, "plain"],
        "api_key_configured": true
    });
    let expected = json!({
        "imednet_conn_id": "imednet_default",
        "base_url": "https://edc.example.com",
        "api_key": "***",
        "security_key": "***",
        "password": "***",
        "token": "***",
        "secret": "***",
        "client_secret": "***",
        "private_key": "***",
        "nested": [{"headers": {"x-imn-security-key": "***", "Accept": "json"}}, 42, "plain"],
        "api_key_configured": "***"
    });
    // `api_key_configured` contains `api_key`: masking the flag is the safe side of the rule, so
    // describe_connection() should add the *_configured flags after redaction.
    assert_eq!(redact_json(&input), expected);
    assert_eq!(redact_json(&expected), expected, "idempotent");
}

#[test]
fn scalars_and_benign_documents_are_unchanged() {
    for v in [
        json!(1),
        json!("password"),
        json!(null),
        json!([1, "token"]),
        json!({"a": {"b": [1]}}),
    ] {
        assert_eq!(redact_json(&v), v);
    }
}

#[test]
fn text_masking() {
    let log =
        "GET /studies with x-api-key=AK-123456 failed; security key SK-abcdef rejected (AK-123456)";
    let out = redact_text(log, &["AK-123456", "SK-abcdef"]);
    assert_eq!(
        out,
        "GET /studies with x-api-key=*** failed; security key *** rejected (***)"
    );
    // Short and empty values are ignored instead of shredding the text.
    assert_eq!(redact_text("a b c abc", &["", "a", "abc"]), "a b c abc");
    // Overlaps: the longer secret is masked whole.
    assert_eq!(
        redact_text("xx-longsecret-xx", &["long", "longsecret"]),
        "xx-***-xx"
    );
    // Multi-byte text around and inside secrets.
    assert_eq!(redact_text("ü→pässwörd←ü", &["pässwörd"]), "ü→***←ü");
    assert_eq!(redact_text("nothing here", &[]), "nothing here");
}

#[test]
fn text_masking_cannot_be_reassembled_by_the_mask() {
    // After masking "abcd", "**" + "*x" would otherwise form the secret "***x"... and so on.
    let out = redact_text("abcd*x", &["abcd", "***x"]);
    assert!(!out.contains("abcd") && !out.contains("***x"), "{out}");
}

// ---- property tests ----

const MARKER: &str = "TOPSECRET";

fn sensitive_key() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SENSITIVE_KEY_FRAGMENTS),
        "[a-z_]{0,3}",
        "[a-z_]{0,3}",
        any::<bool>(),
    )
        .prop_map(|(frag, pre, post, upper)| {
            let k = format!("{pre}{frag}{post}");
            if upper { k.to_uppercase() } else { k }
        })
}

fn benign_key() -> impl Strategy<Value = String> {
    "[a-z]{1,8}".prop_filter("benign", |k| !is_sensitive_key(k))
}

fn benign_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9 ]{0,12}".prop_map(Value::from),
    ]
}

/// Values placed under sensitive keys: any JSON type; every string and key carries the marker.
fn secret_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-z0-9]{0,6}".prop_map(|s| Value::from(format!("{MARKER}{s}"))),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-z]{1,4}".prop_map(|k| format!("{MARKER}{k}")),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Arbitrary nested documents mixing benign entries and secrets under sensitive keys.
fn document() -> impl Strategy<Value = Value> {
    benign_scalar().prop_recursive(5, 64, 6, |inner| {
        let entry = prop_oneof![
            (benign_key(), inner.clone()),
            (sensitive_key(), secret_value()),
        ];
        prop_oneof![
            prop::collection::vec(inner, 0..5).prop_map(Value::Array),
            prop::collection::vec(entry, 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Every sensitive key in the output maps to "***"; everything else keeps its shape.
fn assert_masked(input: &Value, output: &Value) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len());
            for (k, v) in a {
                let out = &b[k];
                if is_sensitive_key(k) {
                    assert_eq!(out, &Value::String(MASK.into()), "key {k}");
                } else {
                    assert_masked(v, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).for_each(|(x, y)| assert_masked(x, y));
        }
        (a, b) => assert_eq!(a, b),
    }
}

proptest! {
    #[test]
    fn no_secret_survives_json_redaction(doc in document()) {
        let out = redact_json(&doc);
        let text = serde_json::to_string(&out).expect("serialise");
        prop_assert!(!text.contains(MARKER), "{text}");
        assert_masked(&doc, &out);
        prop_assert_eq!(redact_json(&out), out.clone());
    }

    #[test]
    fn no_secret_survives_text_redaction(
        secrets in prop::collection::vec("[a-zA-Z0-9*]{4,12}", 1..4),
        filler in prop::collection::vec("[a-zA-Z0-9* =:]{0,10}", 1..8),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut text = String::new();
        for (i, part) in filler.iter().enumerate() {
            text.push_str(part);
            if let Some(pick) = picks.get(i) {
                text.push_str(&secrets[pick.index(secrets.len())]);
            }
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let out = redact_text(&text, &refs);
        for s in &secrets {
            prop_assert!(!out.contains(s.as_str()), "{s} survived in {out} (from {text})");
        }
    }

    #[test]
    fn text_without_secrets_is_unchanged(text in "\\PC{0,40}", secret in "[a-z]{4,8}") {
        prop_assume!(!text.contains(&secret));
        prop_assert_eq!(redact_text(&text, &[&secret]), text);
    }
}
