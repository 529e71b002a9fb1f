use super::*;
use serde_json::json;
use std::fs;

/// A fresh directory per test (tests run in parallel), removed afterwards; canonical so that
/// expected messages match what canonicalize reports even where the temp dir is a link.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flows-files-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir.canonicalize().unwrap())
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn local(root: &str) -> Filesystem {
    Filesystem::Local { root: root.into() }
}

fn mounted(host: &str, alias: &str) -> Filesystem {
    Filesystem::Mounted {
        host_path: host.into(),
        alias: alias.into(),
    }
}

fn s3(bucket: &str, prefix: &str) -> Filesystem {
    Filesystem::S3 {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

fn path(fs: &Filesystem, name: &str) -> Result<PathBuf, String> {
    match fs.resolve(name) {
        Ok(Resolved::Path(p)) => Ok(p),
        Ok(other) => panic!("not a path: {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

fn key(fs: &Filesystem, name: &str) -> Result<String, String> {
    match fs.resolve(name) {
        Ok(Resolved::S3 { bucket, key }) => Ok(format!("{bucket}|{key}")),
        Ok(other) => panic!("not S3: {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_file_reference_has_a_fixed_json_shape() {
    let file = FileRef::new("out/flow1.txt", FileType::Text, "local");
    let shape = json!({
        "filename": "out/flow1.txt",
        "file_type_string": "trialflow:File[Text]",
        "filesystem_identifier": "local",
    });
    assert_eq!(serde_json::to_value(&file).unwrap(), shape);
    assert_eq!(
        serde_json::from_value::<FileRef>(shape.clone()).unwrap(),
        file
    );
    let mut extra = shape;
    extra["size"] = json!(3);
    assert!(serde_json::from_value::<FileRef>(extra).is_err());
    assert_eq!(file.file_type(), Ok(FileType::Text));
}

#[test]
fn file_type_strings_parse_back_exactly() {
    let strings: Vec<&str> = FileType::ALL.iter().map(|t| t.type_string()).collect();
    assert_eq!(
        strings,
        [
            "trialflow:File[Text]",
            "trialflow:File[Json]",
            "trialflow:File[Yaml]",
            "trialflow:File[Binary]"
        ]
    );
    for t in FileType::ALL {
        assert_eq!(FileType::parse(t.type_string()), Ok(t));
        assert_eq!(t.to_string(), t.type_string());
    }
    for bad in ["trialflow:File[Txt]", "trialflow:File[text]", "Text", ""] {
        assert_eq!(
            FileType::parse(bad).unwrap_err().to_string(),
            format!(
                "unknown file type '{bad}'; use one of trialflow:File[Text], trialflow:File[Json], trialflow:File[Yaml], trialflow:File[Binary]"
            )
        );
    }
}

#[test]
fn local_names_stay_inside_the_root() {
    let fs = local("/srv/exports");
    assert_eq!(path(&fs, "a/b.txt"), Ok("/srv/exports/a/b.txt".into()));
    assert_eq!(path(&fs, "./a/./b.txt"), Ok("/srv/exports/a/b.txt".into()));
    assert_eq!(
        path(&fs, "/srv/exports/a.txt"),
        Ok("/srv/exports/a.txt".into())
    );
    let place = "root '/srv/exports'";
    for outside in ["/srv/exportsX/a.txt", "/etc/passwd", "/srv"] {
        assert_eq!(
            path(&fs, outside),
            Err(format!("path '{outside}' is outside {place}"))
        );
    }
    for up in ["a/../../etc/passwd", "../x", "/srv/exports/../x"] {
        assert_eq!(
            path(&fs, up),
            Err(format!(
                "path '{up}' uses '..'; name files inside {place} directly"
            ))
        );
    }
    for nothing in ["", ".", "/srv/exports", "/srv/exports/."] {
        assert_eq!(
            path(&fs, nothing),
            Err(format!("path '{nothing}' names no file inside {place}"))
        );
    }
}

#[test]
fn mounted_names_start_with_the_alias() {
    let fs = mounted("/srv/data", "/data");
    assert_eq!(
        path(&fs, "/data/run1/out.txt"),
        Ok("/srv/data/run1/out.txt".into())
    );
    let place = "mount '/data' (host '/srv/data')";
    for outside in [
        "/database/x",
        "/etc/passwd",
        "run1/out.txt",
        "data/x",
        "/srv/data/x",
    ] {
        assert_eq!(
            path(&fs, outside),
            Err(format!("path '{outside}' is outside {place}"))
        );
    }
    assert_eq!(
        path(&fs, "/data/../etc/passwd"),
        Err(format!(
            "path '/data/../etc/passwd' uses '..'; name files inside {place} directly"
        ))
    );
    assert_eq!(
        path(&fs, "/data/"),
        Err(format!("path '/data/' names no file inside {place}"))
    );
}

#[cfg(unix)]
#[test]
fn symbolic_links_cannot_lead_outside() {
    use std::os::unix::fs::symlink;
    let tmp = TempDir::new("links");
    let root = tmp.dir("root");
    let outside = tmp.dir("outside");
    fs::write(outside.join("secret.txt"), "s").unwrap();
    fs::create_dir_all(root.join("sub")).unwrap();
    symlink(&outside, root.join("out")).unwrap();
    symlink(root.join("sub"), root.join("inner")).unwrap();
    symlink(tmp.0.join("nowhere"), root.join("dangling")).unwrap();

    let fs = Filesystem::Local { root: root.clone() };
    let place = format!("root '{}'", root.display());
    let escape = |name: &str, target: &Path| {
        Err(format!(
            "path '{name}' leads through a symbolic link to {}, outside {place}",
            target.display()
        ))
    };
    assert_eq!(
        path(&fs, "out/secret.txt"),
        escape("out/secret.txt", &outside.join("secret.txt"))
    );
    // Not written yet: the linked directory it would go into is checked.
    assert_eq!(
        path(&fs, "out/new/file.txt"),
        escape("out/new/file.txt", &outside)
    );
    assert_eq!(path(&fs, "inner/a.txt"), Ok(root.join("inner/a.txt")));
    assert_eq!(path(&fs, "new/a.txt"), Ok(root.join("new/a.txt")));
    assert_eq!(
        path(&fs, "dangling"),
        Err("path 'dangling' is a symbolic link to nothing; refused because writing would follow it".into())
    );

    // A root that is itself a link is fine: only leaving it counts.
    let root_link = tmp.0.join("root_link");
    symlink(&root, &root_link).unwrap();
    let linked = Filesystem::Local {
        root: root_link.clone(),
    };
    assert_eq!(path(&linked, "sub/a.txt"), Ok(root_link.join("sub/a.txt")));

    let mount = Filesystem::Mounted {
        host_path: root.clone(),
        alias: "/data".into(),
    };
    assert_eq!(
        path(&mount, "/data/out/secret.txt"),
        Err(format!(
            "path '/data/out/secret.txt' leads through a symbolic link to {}, outside mount '/data' (host '{}')",
            outside.join("secret.txt").display(),
            root.display()
        ))
    );
    assert_eq!(
        path(&mount, "/data/inner/a.txt"),
        Ok(root.join("inner/a.txt"))
    );
}

#[test]
fn s3_names_are_keys_under_the_prefix() {
    let fs = s3("b", "exports/2024/");
    assert_eq!(key(&fs, "x/y.csv"), Ok("b|exports/2024/x/y.csv".into()));
    assert_eq!(key(&fs, "/x//./y.csv"), Ok("b|exports/2024/x/y.csv".into()));
    assert_eq!(
        key(&fs, "s3://b/exports/2024/x.csv"),
        Ok("b|exports/2024/x.csv".into())
    );
    assert_eq!(key(&s3("b", ""), "x/y.csv"), Ok("b|x/y.csv".into()));
    assert_eq!(key(&s3("b", "/p"), "s3://b/p/q"), Ok("b|p/q".into()));
    let place = "s3://b/exports/2024";
    for outside in [
        "s3://other/exports/2024/x.csv",
        "s3://b/elsewhere/x.csv",
        "s3://b/exports/2024x/a",
        "s3://b",
    ] {
        assert_eq!(
            key(&fs, outside),
            Err(format!("path '{outside}' is outside {place}"))
        );
    }
    for up in ["../x", "a/../../x", "s3://b/exports/2024/../x"] {
        assert_eq!(
            key(&fs, up),
            Err(format!(
                "path '{up}' uses '..'; name files inside {place} directly"
            ))
        );
    }
    for nothing in ["", "/", "./", "s3://b/exports/2024/"] {
        assert_eq!(
            key(&fs, nothing),
            Err(format!("path '{nothing}' names no file inside {place}"))
        );
    }
}

#[test]
fn references_resolve_through_the_configured_filesystems() {
    let mut all = Filesystems::new();
    assert_eq!(
        all.resolve(&FileRef::new("a.txt", FileType::Text, "local"))
            .unwrap_err()
            .to_string(),
        "unknown filesystem 'local'; configured: none"
    );
    all.insert("local", local("/srv/exports"));
    all.insert("mounted", mounted("/srv/data", "/data"));
    assert_eq!(
        all.resolve(&FileRef::new("/data/a.json", FileType::Json, "mounted")),
        Ok((Resolved::Path("/srv/data/a.json".into()), FileType::Json))
    );
    assert_eq!(
        all.resolve(&FileRef::new("a.txt", FileType::Text, "nfs"))
            .unwrap_err()
            .to_string(),
        "unknown filesystem 'nfs'; configured: local, mounted"
    );
    let mut bad_type = FileRef::new("a.txt", FileType::Text, "local");
    bad_type.file_type_string = "trialflow:File[Hdf5]".into();
    assert!(matches!(
        all.resolve(&bad_type),
        Err(FileError::UnknownType { found }) if found == "trialflow:File[Hdf5]"
    ));
    assert!(matches!(
        all.resolve(&FileRef::new("../a.txt", FileType::Text, "local")),
        Err(FileError::ParentDir { .. })
    ));
}

#[test]
fn files_decode_to_values_and_encode_back() {
    let cases: [(FileType, &[u8], Value); 4] = [
        (FileType::Text, b"hey you", json!("hey you")),
        (
            FileType::Json,
            b"{\n  \"a\": [\n    1,\n    \"x\"\n  ]\n}\n",
            json!({"a": [1, "x"]}),
        ),
        (FileType::Yaml, b"a:\n- 1\n- x\n", json!({"a": [1, "x"]})),
        (FileType::Binary, &[0, 255, 16, 104], json!("AP8QaA==")),
    ];
    for (file_type, bytes, value) in cases {
        assert_eq!(decode(bytes, file_type), Ok(value.clone()), "{file_type}");
        assert_eq!(encode(&value, file_type).unwrap(), bytes, "{file_type}");
    }
    assert_eq!(
        decode(b"a: [1, x]", FileType::Yaml),
        Ok(json!({"a": [1, "x"]}))
    );
    assert_eq!(decode(b"", FileType::Text), Ok(json!("")));
}

#[test]
fn bad_content_is_refused_with_the_reason() {
    let read = |bytes: &[u8], t| decode(bytes, t).unwrap_err().to_string();
    let write = |value: Value, t| encode(&value, t).unwrap_err().to_string();
    assert_eq!(
        read(b"h\xffi", FileType::Text),
        "cannot read a trialflow:File[Text] file: not UTF-8 at byte 1"
    );
    assert_eq!(
        read(b"{\"a\": }", FileType::Json),
        "cannot read a trialflow:File[Json] file: expected value at line 1 column 7"
    );
    assert!(
        read(b"a: [1", FileType::Yaml).starts_with("cannot read a trialflow:File[Yaml] file: "),
        "{}",
        read(b"a: [1", FileType::Yaml)
    );
    assert_eq!(
        write(json!(5), FileType::Text),
        "cannot write a trialflow:File[Text] file: needs text, got the number 5"
    );
    assert_eq!(
        write(json!({"a": 1}), FileType::Binary),
        "cannot write a trialflow:File[Binary] file: needs a base64 string, got an object with keys a"
    );
    assert_eq!(
        write(json!("AB!D"), FileType::Binary),
        "cannot write a trialflow:File[Binary] file: Invalid symbol 33, offset 2."
    );
}

#[test]
fn configured_filesystems_parse_or_name_the_bad_entry() {
    assert_eq!(
        parse_filesystem("data=mounted:/srv/data:/data"),
        Ok((
            "data".into(),
            Filesystem::Mounted {
                host_path: "/srv/data".into(),
                alias: "/data".into()
            }
        ))
    );
    assert_eq!(
        parse_filesystem("lake=s3:trial-lake/flows/"),
        Ok((
            "lake".into(),
            Filesystem::S3 {
                bucket: "trial-lake".into(),
                prefix: "flows".into()
            }
        ))
    );
    assert_eq!(
        parse_filesystem("scratch=local:/tmp/x"),
        Ok((
            "scratch".into(),
            Filesystem::Local {
                root: "/tmp/x".into()
            }
        ))
    );
    for bad in [
        "nope",
        "=local:/x",
        "a=local:relative",
        "a=ftp:/x",
        "a=s3:",
        "a=mounted:/only",
    ] {
        let err = parse_filesystem(bad).unwrap_err();
        assert!(
            err.contains(&format!("'{bad}'")) || err.contains("bucket"),
            "{err}"
        );
    }
}
