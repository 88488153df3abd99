//! Quoted URIs in place of source and sink names:
//! `FROM 'file:///data/*.csv?format=csv&delimiter=;'`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::props::{ConnectorConfig, Origin, Role};
use crate::{ConfigError, Result};

/// What the location of a URI (between `scheme://` and `?`) means to the
/// connector its scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriLocation {
    /// A file path, the connector's `path`: `file:///data/*.csv`.
    Path,
    /// Nothing: `stdout://`, `datagen://?rate=10`.
    Ignored,
    /// Kept whole as `uri` and `location` for the connector to read:
    /// `kafka://broker:9092/topic`.
    Raw,
    /// The whole URI up to its query is the connector's `path`: an object
    /// store URL, `s3://bucket/prefix/*.parquet`.
    Url,
}

/// A URI scheme, registered by the connector it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriScheme {
    /// The scheme (`file`), matched case-insensitively.
    pub scheme: &'static str,
    /// The connector kind it creates (`file`).
    pub kind: &'static str,
    /// What its location means.
    pub location: UriLocation,
}

/// Turns a URI into a connector config named `name`. The scheme names the
/// connector kind through `schemes` (the connectors' registrations); a
/// scheme none registered becomes a kind of the same name with a raw
/// location, for the registry to refuse with its list of kinds. The query
/// string gives the other keys. Keys in `extra` (named WITH keys for the
/// same name) override.
pub fn from_uri(
    name: &str,
    uri: &str,
    role: Role,
    base_dir: &Path,
    extra: BTreeMap<String, String>,
    schemes: &[UriScheme],
) -> Result<ConnectorConfig> {
    crate::secrets::register_in_text(uri);
    let bad = |m: &str| ConfigError::BadUri {
        uri: crate::mask(uri).into_owned(),
        message: m.to_string(),
    };
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("expected scheme://..., e.g. file:///data/*.csv"))?;
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let mut props = BTreeMap::new();
    let scheme = scheme.to_ascii_lowercase();
    let (kind, form) = schemes
        .iter()
        .find(|s| s.scheme == scheme)
        .map(|s| (s.kind.to_string(), s.location))
        .unwrap_or((scheme.clone(), UriLocation::Raw));
    match form {
        UriLocation::Path => {
            // file:///abs/path and file://relative/path
            let decoded = percent_encoding::percent_decode_str(location)
                .decode_utf8()
                .map_err(|_| bad("path is not valid UTF-8"))?;
            if decoded.is_empty() {
                return Err(bad("missing path after file://"));
            }
            props.insert("path".to_string(), decoded.into_owned());
        }
        UriLocation::Ignored => {}
        UriLocation::Url => {
            if location.is_empty() {
                return Err(bad(
                    "missing bucket and path, e.g. s3://bucket/prefix/*.parquet",
                ));
            }
            props.insert("path".to_string(), format!("{scheme}://{location}"));
        }
        UriLocation::Raw => {
            props.insert("uri".to_string(), uri.to_string());
            props.insert("location".to_string(), location.to_string());
        }
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(&format!("query parameter '{pair}' has no '='")))?;
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            props.insert(dec(k), dec(v));
        }
    }
    props.extend(extra);
    for (k, v) in &props {
        crate::secrets::register_pair(k, v);
    }
    Ok(ConnectorConfig {
        name: name.to_string(),
        role,
        kind,
        props,
        origin: Origin::Uri(uri.to_string()),
        base_dir: base_dir.to_path_buf(),
        job: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: &[UriScheme] = &[
        UriScheme {
            scheme: "file",
            kind: "file",
            location: UriLocation::Path,
        },
        UriScheme {
            scheme: "console",
            kind: "stdout",
            location: UriLocation::Ignored,
        },
    ];

    #[test]
    fn scheme_names_the_registered_kind_or_itself() {
        let c = from_uri(
            "u",
            "CONSOLE://x?y=1",
            Role::Sink,
            Path::new("/"),
            BTreeMap::new(),
            SCHEMES,
        )
        .unwrap();
        assert_eq!(
            (c.kind.as_str(), c.get("uri"), c.get("y")),
            ("stdout", None, Some("1"))
        );
        let c = from_uri(
            "u",
            "kafka://b:9092/t",
            Role::Source,
            Path::new("/"),
            BTreeMap::new(),
            SCHEMES,
        )
        .unwrap();
        assert_eq!(
            (c.kind.as_str(), c.get("location")),
            ("kafka", Some("b:9092/t"))
        );
    }

    #[test]
    fn file_uri_with_query() {
        let c = from_uri(
            "u",
            "file:///data/*.csv?format=csv&delimiter=;",
            Role::Source,
            Path::new("/"),
            BTreeMap::new(),
            SCHEMES,
        )
        .unwrap();
        assert_eq!(c.kind, "file");
        assert_eq!(c.get("path"), Some("/data/*.csv"));
        assert_eq!(c.get("delimiter"), Some(";"));
        assert_eq!(c.get("format"), Some("csv"));
        let c = from_uri(
            "u",
            "file://out/x%20y.parquet",
            Role::Sink,
            Path::new("/"),
            BTreeMap::new(),
            SCHEMES,
        )
        .unwrap();
        assert_eq!(c.get("path"), Some("out/x y.parquet"));
        assert!(
            from_uri(
                "u",
                "/no/scheme",
                Role::Sink,
                Path::new("/"),
                BTreeMap::new(),
                SCHEMES
            )
            .is_err()
        );
    }
}
