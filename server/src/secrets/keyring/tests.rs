use super::*;
use std::os::unix::fs::PermissionsExt;

const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn file_ring() -> (tempfile::TempDir, KeyRing) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ring = KeyRing::load_or_create_with(dir.path(), None).expect("create key file");
    (dir, ring)
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn round_trip() {
    let (_dir, ring) = file_ring();
    let stored = ring
        .encrypt("s3cr3t-pa55", "imednet_default", "security_key")
        .expect("encrypt");
    assert!(stored.starts_with(&format!("tf1:{}:", ring.active_key_id())));
    let plain = ring
        .decrypt(&stored, "imednet_default", "security_key")
        .expect("decrypt");
    assert_eq!(plain.expose_secret(), "s3cr3t-pa55");
    // Unicode and empty values survive too.
    for value in ["", "pässwörd ✓ 🔑", &"x".repeat(10_000)] {
        let stored = ring.encrypt(value, "c", "f").expect("encrypt");
        assert_eq!(
            ring.decrypt(&stored, "c", "f")
                .expect("decrypt")
                .expose_secret(),
            value
        );
    }
}

#[test]
fn nonces_are_random() {
    let (_dir, ring) = file_ring();
    let a = ring.encrypt("same", "c", "f").expect("encrypt");
    let b = ring.encrypt("same", "c", "f").expect("encrypt");
    assert_ne!(a, b);
}

#[test]
fn wrong_associated_data_fails_clearly() {
    let (_dir, ring) = file_ring();
    let stored = ring.encrypt("pw", "conn_a", "password").expect("encrypt");
    for (conn, field) in [
        ("conn_b", "password"),
        ("conn_a", "api_key"),
        ("conn_", "apassword"),
    ] {
        let err = ring.decrypt(&stored, conn, field).expect_err("must fail");
        assert!(matches!(err, SecretError::DecryptFailed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(conn) && msg.contains(field), "{msg}");
        assert!(msg.contains("another connection or field"), "{msg}");
    }
}

#[test]
fn tampered_ciphertext_fails() {
    let (_dir, ring) = file_ring();
    let stored = ring.encrypt("password123", "c", "f").expect("encrypt");
    let (head, payload) = stored.rsplit_once(':').expect("format");
    let mut blob = URL_SAFE_NO_PAD.decode(payload).expect("b64");
    for i in [0, NONCE_LEN, blob.len() - 1] {
        blob[i] ^= 0x01;
        let forged = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&blob));
        let err = ring.decrypt(&forged, "c", "f").expect_err("tampered");
        assert!(matches!(err, SecretError::DecryptFailed { .. }));
        blob[i] ^= 0x01;
    }
    // Truncated and garbled values are reported as malformed, not as a crypto failure.
    assert!(matches!(
        ring.decrypt("tf1:k:AAAA", "c", "f"),
        Err(SecretError::Malformed(_))
    ));
    assert!(matches!(
        ring.decrypt("plaintext", "c", "f"),
        Err(SecretError::Malformed(_))
    ));
    assert!(matches!(
        ring.decrypt(&format!("{head}:!!"), "c", "f"),
        Err(SecretError::Malformed(_))
    ));
}

#[test]
fn relabelled_key_id_fails() {
    let ring = KeyRing::from_env_value(&format!("a:{HEX_KEY},b:{HEX_KEY}")).expect("env");
    // Same key bytes under two ids: the id is bound into the associated data.
    let stored = ring.encrypt("pw", "c", "f").expect("encrypt");
    let moved = stored.replacen("tf1:a:", "tf1:b:", 1);
    assert!(matches!(
        ring.decrypt(&moved, "c", "f"),
        Err(SecretError::DecryptFailed { .. })
    ));
    let unknown = stored.replacen("tf1:a:", "tf1:zz:", 1);
    let err = ring.decrypt(&unknown, "c", "f").expect_err("unknown id");
    assert!(matches!(err, SecretError::UnknownKey(ref id) if id == "zz"));
}

#[test]
fn rotation_keeps_old_values_and_reencrypt_moves_them() {
    let (dir, mut ring) = file_ring();
    let old_id = ring.active_key_id().to_owned();
    let old = ring
        .encrypt("old-secret", "c1", "password")
        .expect("encrypt");
    assert!(!ring.needs_rotation(&old));

    let new_id = ring.rotate().expect("rotate");
    assert_ne!(new_id, old_id);
    assert_eq!(ring.active_key_id(), new_id);
    assert_eq!(ring.key_ids(), vec![new_id.as_str(), old_id.as_str()]);
    assert!(ring.needs_rotation(&old));
    assert!(ring.needs_rotation("garbage"));
    assert_eq!(
        ring.decrypt(&old, "c1", "password")
            .expect("old")
            .expose_secret(),
        "old-secret"
    );

    let moved = ring.reencrypt(&old, "c1", "password").expect("reencrypt");
    assert!(moved.starts_with(&format!("tf1:{new_id}:")));
    assert!(!ring.needs_rotation(&moved));
    assert_eq!(
        ring.decrypt(&moved, "c1", "password")
            .expect("new")
            .expose_secret(),
        "old-secret"
    );
    // reencrypt checks the associated data as well.
    assert!(ring.reencrypt(&old, "c2", "password").is_err());

    // The rotation was persisted atomically: a fresh load sees both keys, still 0600, no temp files.
    let path = dir.path().join(KEY_FILE_NAME);
    assert_eq!(mode_of(&path), 0o600);
    let reloaded = KeyRing::load_or_create_with(dir.path(), None).expect("reload");
    assert_eq!(reloaded.key_ids(), vec![new_id.as_str(), old_id.as_str()]);
    assert_eq!(
        reloaded
            .decrypt(&old, "c1", "password")
            .expect("old")
            .expose_secret(),
        "old-secret"
    );
    assert_eq!(
        reloaded
            .decrypt(&moved, "c1", "password")
            .expect("new")
            .expose_secret(),
        "old-secret"
    );
    let entries: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(entries.len(), 1, "temp files left behind: {entries:?}");
}

#[test]
fn key_file_created_0600_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("nested/data");
    let ring = KeyRing::load_or_create_with(&data, None).expect("create");
    let path = data.join(KEY_FILE_NAME);
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(mode_of(&data), 0o700);
    let again = KeyRing::load_or_create_with(&data, None).expect("load");
    assert_eq!(again.key_ids(), ring.key_ids());
    let stored = ring.encrypt("v", "c", "f").expect("encrypt");
    assert_eq!(
        again
            .decrypt(&stored, "c", "f")
            .expect("decrypt")
            .expose_secret(),
        "v"
    );
}

#[test]
fn insecure_key_file_refused() {
    let (dir, _ring) = file_ring();
    let path = dir.path().join(KEY_FILE_NAME);
    for mode in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let err = KeyRing::load_or_create_with(dir.path(), None).expect_err("insecure");
        assert!(
            matches!(err, SecretError::InsecureKeyFile { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains(&format!("{mode:03o}")),
            "{msg}"
        );
    }
    // Insecure is never "missing": the file must not be silently replaced by a new key.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
    KeyRing::load_or_create_with(dir.path(), None).expect("0400 is fine");
}

#[test]
fn corrupt_key_file_reports_line_without_key_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(KEY_FILE_NAME);
    let mut f = create_private_file(&path).expect("create");
    f.write_all(b"# comment\nk1:c2hvcnRrZXlzaG9ydGtleQ==\n")
        .expect("write");
    let err = KeyRing::from_key_file(&path).expect_err("short key");
    let msg = err.to_string();
    assert!(msg.contains("line 1") && msg.contains("got 16"), "{msg}");
    assert!(!msg.contains("c2hvcnRrZXlzaG9ydGtleQ"), "{msg}");
}

#[test]
fn env_key_formats() {
    let raw: Vec<u8> = (0u8..32).collect();
    let formats = [
        HEX_KEY.to_owned(),
        HEX_KEY.to_uppercase(),
        STANDARD.encode(&raw),
        STANDARD_NO_PAD.encode(&raw),
        URL_SAFE_NO_PAD.encode(&raw),
        format!("  {}\n", STANDARD.encode(&raw)),
    ];
    let reference = KeyRing::from_env_value(HEX_KEY).expect("hex");
    assert_eq!(reference.key_ids(), vec![DEFAULT_ENV_KEY_ID]);
    let stored = reference.encrypt("v", "c", "f").expect("encrypt");
    for value in &formats {
        let ring = KeyRing::from_env_value(value).expect("format accepted");
        assert_eq!(
            ring.decrypt(&stored, "c", "f")
                .expect("same key")
                .expose_secret(),
            "v"
        );
    }

    // A list: first entry active, older entries still decrypt.
    let other = URL_SAFE.encode([7u8; 32]);
    let list = KeyRing::from_env_value(&format!("new:{other}, default:{HEX_KEY}")).expect("list");
    assert_eq!(list.key_ids(), vec!["new", "default"]);
    assert_eq!(
        list.decrypt(&stored, "c", "f")
            .expect("old key")
            .expose_secret(),
        "v"
    );
    assert!(list.needs_rotation(&stored));
    assert!(
        list.reencrypt(&stored, "c", "f")
            .expect("reenc")
            .starts_with("tf1:new:")
    );

    // The environment wins over the key file, and env keys can't be rotated in place.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ring = KeyRing::load_or_create_with(dir.path(), Some(HEX_KEY)).expect("env");
    assert!(!dir.path().join(KEY_FILE_NAME).exists());
    assert!(matches!(
        ring.rotate(),
        Err(SecretError::RotationUnsupported)
    ));
    // Blank env falls back to the file.
    KeyRing::load_or_create_with(dir.path(), Some("  ")).expect("file");
    assert!(dir.path().join(KEY_FILE_NAME).exists());
}

#[test]
fn bad_env_keys_rejected_without_echo() {
    let secretish = "bm90LWEtMzItYnl0ZS1rZXk"; // base64 of 17 bytes
    let cases = [
        secretish.to_owned(),
        format!("{HEX_KEY}00"),
        "zz:not base64 !".to_owned(),
        format!("a:{HEX_KEY},a:{HEX_KEY}"),
        format!("bad id:{HEX_KEY}"),
        format!("a:{HEX_KEY},"),
        format!("x:{secretish}"),
    ];
    for value in &cases {
        let err = KeyRing::from_env_value(value).expect_err(value);
        assert!(matches!(err, SecretError::InvalidEnvKey(_)));
        let msg = err.to_string();
        assert!(msg.starts_with(KEY_ENV_VAR), "{msg}");
        assert!(!msg.contains(secretish) && !msg.contains(HEX_KEY), "{msg}");
    }
}

#[test]
fn debug_shows_ids_only() {
    let ring = KeyRing::from_env_value(HEX_KEY).expect("env");
    let dbg = format!("{ring:?}");
    assert!(dbg.contains("default") && !dbg.contains("000102"), "{dbg}");
}

/// A database dump holds only stored strings: neither the plaintext nor its common encodings
/// may appear in them.
#[test]
fn stored_value_reveals_no_plaintext() {
    let (_dir, ring) = file_ring();
    let plaintext = "Sup3r-Secret-Security-Key-0123456789";
    let stored = ring
        .encrypt(plaintext, "imednet_default", "security_key")
        .expect("encrypt");
    let hex: String = plaintext.bytes().map(|b| format!("{b:02x}")).collect();
    let needles = [
        plaintext.to_owned(),
        plaintext.to_lowercase(),
        STANDARD.encode(plaintext),
        STANDARD_NO_PAD.encode(plaintext),
        URL_SAFE_NO_PAD.encode(plaintext),
        hex,
    ];
    for needle in &needles {
        assert!(
            !stored.contains(needle.as_str()),
            "stored value leaks {needle}"
        );
        // Also no long fragment (a base64 chunk aligned differently would still share 8+ chars).
        for window in needle.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).expect("ascii");
            assert!(
                !stored.contains(window),
                "stored value shares `{window}` with {needle}"
            );
        }
    }
    assert_eq!(
        ring.decrypt(&stored, "imednet_default", "security_key")
            .expect("decrypt")
            .expose_secret(),
        plaintext
    );
}

#[test]
fn reload_and_rotate_see_keys_added_by_another_process() {
    let (dir, mut server) = file_ring();
    let mut cli = KeyRing::load_or_create_with(dir.path(), None).expect("cli");
    let cli_id = cli.rotate().expect("cli rotate");
    let moved = cli.encrypt("v", "c", "f").expect("encrypt");
    // The server's ring predates the rotation...
    assert!(matches!(
        server.decrypt(&moved, "c", "f"),
        Err(SecretError::UnknownKey(_))
    ));
    // ...and a rotation by the server must not drop the CLI's key.
    let mut stale = KeyRing::load_or_create_with(dir.path(), None).expect("load");
    stale.keys.retain(|k| k.id != cli_id);
    let newest = stale.rotate().expect("rotate");
    let on_disk = KeyRing::from_key_file(&dir.path().join(KEY_FILE_NAME)).expect("load");
    assert_eq!(on_disk.active_key_id(), newest);
    assert!(on_disk.key_ids().contains(&cli_id.as_str()));
    server.reload().expect("reload");
    assert_eq!(
        server
            .decrypt(&moved, "c", "f")
            .expect("after reload")
            .expose_secret(),
        "v"
    );
}
