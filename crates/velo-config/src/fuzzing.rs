//! Fuzzing entry point of configuration resolution (`fuzz/`, and the
//! regression test that replays its corpus): arbitrary text as a value with
//! `${...}` variables, a URI in place of a source name, a `config_file`
//! YAML with `extends`, and text to mask. Each may be refused; none may
//! panic, hang or abort.

use std::collections::BTreeMap;

use crate::{Role, VarContext};

/// One fuzz input: the first line is a value and a URI, the rest a YAML file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let vars = VarContext::with_env(BTreeMap::from([
        ("A".to_string(), "1".to_string()),
        ("NESTED".to_string(), "${A}".to_string()),
    ]));
    let _ = vars.substitute(first, "fuzz");
    let _ = crate::mask(&text);
    for role in [Role::Source, Role::Sink] {
        let _ = crate::uri::from_uri(
            "fuzz",
            first,
            role,
            std::path::Path::new("/"),
            BTreeMap::new(),
            &[crate::uri::UriScheme {
                scheme: "file",
                kind: "file",
                location: crate::uri::UriLocation::Path,
            }],
        );
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("c.yaml");
    if std::fs::write(&path, rest).is_ok() {
        let _ = crate::yaml::load_flat(&path, &vars);
    }
}
