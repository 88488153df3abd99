//! Secrets never printed: masking by key name, by value and by shape.
//!
//! A key name alone is not enough: a password can sit in a URI, in a query
//! parameter, in a PEM block, in a variable used inside another value, or be
//! echoed by an error message that quotes what the user wrote. So every text
//! Velostream prints (`explain`, `validate`, errors, every log line) goes
//! through [`mask`], which hides
//!
//! * **values** registered as secret ([`register`]): the values of secret
//!   keys ([`is_secret_key`]) from WITH, YAML, `--set` and URIs, the
//!   passwords of URIs, and the values of environment variables whose names
//!   are secret-shaped (`DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`, ...);
//! * **shapes**: `user:password@` in any URI, `password=` / `sig=` /
//!   `token=` and similar query parameters or `key=value` pairs, and PEM
//!   blocks.
//!
//! The registry is one per process: whatever a job of the process declared
//! secret is masked in what any part of it prints.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

use regex::Regex;

/// What a masked secret is shown as.
pub const MASK: &str = "****";

/// Secret values shorter than this are not masked by value (they would
/// mask ordinary words); they are still masked by key and by shape.
const MIN_VALUE_LEN: usize = 4;

/// librdkafka and schema-registry keys that hold secrets without saying so
/// in their last word.
const SECRET_KEYS: &[&str] = &[
    "sasl.jaas.config",
    "sasl.oauthbearer.config",
    "sasl.kerberos.keytab",
    "basic.auth.user.info",
    "schema.registry.basic.auth.user.info",
    "ssl.key.pem",
    "ssl.certificate.pem",
    "ssl_key_pem",
    "auth_header",
    "authorization",
    "connection_string",
    "connection.string",
    "dsn",
];

/// Words that make a key secret wherever they stand in it.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "access_key_id",
];

/// Last words (after the final `.` or `_` or `-`) that make a key secret.
const SECRET_ENDINGS: &[&str] = &["pwd", "key", "pass", "sig", "signature"];

/// Key endings that look secret but name something public.
const PUBLIC_KEYS: &[&str] = &[
    "key.field",
    "primary_key",
    "key.format",
    "key.serializer",
    "key.deserializer",
    "partition_key",
    "merge_key",
    "sort_key",
    "message.key",
    "ssl.key.location",
    "sasl.kerberos.keytab.location",
];

/// Whether the value of `key` is a secret: never logged, never printed by
/// `explain`, never echoed by an error.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // `orders.sasl.password`: the connector's own key after the name
    if PUBLIC_KEYS
        .iter()
        .any(|p| k == *p || k.ends_with(&format!(".{p}")))
    {
        return false;
    }
    if SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!(".{s}")))
    {
        return true;
    }
    if SECRET_WORDS.iter().any(|w| k.contains(w)) {
        return true;
    }
    let last = k.rsplit(['.', '_', '-']).next().unwrap_or(&k);
    SECRET_ENDINGS.contains(&last)
}

/// Whether an environment variable's name says it holds a secret.
fn is_secret_env(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // the shell's working directories, not passwords
    if n == "pwd" || n == "oldpwd" {
        return false;
    }
    is_secret_key(&n) || n.ends_with("_pw")
}

static VALUES: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| {
    let mut v: Vec<String> = std::env::vars()
        .filter(|(k, val)| is_secret_env(k) && val.chars().count() >= MIN_VALUE_LEN)
        .map(|(_, val)| val)
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    RwLock::new(v)
});

/// Declares `value` a secret: from now on [`mask`] hides it wherever it
/// appears. Short values (under 4 characters) are masked by key and shape
/// only.
pub fn register(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_VALUE_LEN || value == MASK {
        return;
    }
    let mut v = VALUES.write().unwrap_or_else(|e| e.into_inner());
    if !v.iter().any(|s| s == value) {
        v.push(value.to_string());
        // longest first: a secret that contains another is masked whole
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the secrets of a `key = value` pair: the value of a secret
/// key, and the password of a URI in any value.
pub fn register_pair(key: &str, value: &str) {
    if is_secret_key(key) {
        register(value);
    }
    register_in_text(value);
}

/// Registers the passwords of URIs and the secret query parameters found
/// in `text`.
pub fn register_in_text(text: &str) {
    if !text.contains('@') && !text.contains('=') {
        return;
    }
    for c in USERINFO.captures_iter(text) {
        if let Some(p) = c.get(2) {
            register(p.as_str());
        }
    }
    for c in PARAM.captures_iter(text) {
        if let Some(p) = c.get(2) {
            register(p.as_str());
        }
    }
}

/// `scheme://user:password@` (and `,user:password@` of a second host):
/// group 1 keeps `://user:`, group 2 is the password.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"((?:://|,)[^/?#@\s:,'\x22]*:)([^/?#@\s,'\x22]+)@").expect("valid pattern")
});

/// `password=...`, `sig=...`, `X-Amz-Signature=...` as a query parameter
/// or a `key=value` pair: group 1 keeps the name and `=`, group 2 is the value.
static PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)((?:^|[?&;,\s'\x22(])",
        // a name holding a secret word anywhere, or ending in a short one
        r"(?:[a-z0-9_.\-]*(?:password|passwd|secret|token|credential|api_?key|access_?key|private_?key|user[._]info)[a-z0-9_.\-]*",
        r"|(?:[a-z0-9_.\-]*[_.\-])?(?:sig|signature|pwd|authorization))",
        r"['\x22]?\s*[=:]\s*['\x22]?)",
        r"([^&;,\s'\x22)]+)",
    ))
    .expect("valid pattern")
});

/// A PEM block (private keys, certificates).
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END [A-Z0-9 ]+-----|$)")
        .expect("valid pattern")
});

/// `text` with every secret hidden: registered values, URI passwords,
/// secret query parameters and `key=value` pairs, PEM blocks.
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    {
        let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), MASK));
            }
        }
    }
    if out.contains("-----BEGIN ") {
        out = Cow::Owned(
            PEM.replace_all(&out, |c: &regex::Captures<'_>| {
                format!("-----BEGIN {}----- {MASK}", &c[1])
            })
            .into_owned(),
        );
    }
    if out.contains('@') {
        if let Cow::Owned(s) = USERINFO.replace_all(&out, format!("${{1}}{MASK}@").as_str()) {
            out = Cow::Owned(s);
        }
    }
    if out.contains('=') || out.contains(':') {
        if let Cow::Owned(s) = PARAM.replace_all(&out, |c: &regex::Captures<'_>| {
            if c[2].starts_with(MASK) {
                c[0].to_string()
            } else {
                format!("{}{MASK}", &c[1])
            }
        }) {
            out = Cow::Owned(s);
        }
    }
    out
}

/// The value to show for `key` in logs and `explain`: `****` for secrets,
/// anything secret-shaped inside other values masked.
pub fn display_value<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    if is_secret_key(key) {
        return Cow::Borrowed(MASK);
    }
    mask(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_by_word_and_ending() {
        for k in [
            "connection.password",
            "orders.sasl.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "basic.auth.user.info",
            "ssl.key.pem",
            "ssl.key.password",
            "db.pwd",
            "aws.secret_access_key",
            "api.token",
            "google.credentials",
            "x.signing_key",
            "s.apikey",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "path",
            "key.field",
            "orders.key.field",
            "primary_key",
            "ssl.key.location",
            "topic",
            "format",
            "keys",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn uri_passwords_parameters_and_pem_are_masked_by_shape() {
        assert_eq!(
            mask("postgresql://app:s3cret@db:5432/x?a=b"),
            "postgresql://app:****@db:5432/x?a=b"
        );
        assert_eq!(
            mask("kafka://u:pw1@h:9092,v:pw2@h2/t"),
            "kafka://u:****@h:9092,v:****@h2/t"
        );
        assert_eq!(
            mask("https://acct.blob/x?sv=1&sig=AbCd%2F&se=2"),
            "https://acct.blob/x?sv=1&sig=****&se=2"
        );
        assert_eq!(
            mask("s3://b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x"),
            "s3://b/k?X-Amz-Signature=****&X-Amz-Credential=****"
        );
        assert_eq!(
            mask("host=db password=hunter2 user=x"),
            "host=db password=**** user=x"
        );
        assert_eq!(
            mask("'sasl.password' = 'topsecret'"),
            "'sasl.password' = '****'"
        );
        let pem = "key: -----BEGIN PRIVATE KEY-----\nMIIEv\nQ==\n-----END PRIVATE KEY----- end";
        assert_eq!(mask(pem), "key: -----BEGIN PRIVATE KEY----- **** end");
        assert_eq!(mask("data/x.csv"), "data/x.csv");
        assert_eq!(mask("a = b, k: v"), "a = b, k: v");
    }

    #[test]
    fn registered_values_are_masked_anywhere() {
        register("Zq9-very-unusual-secret");
        assert_eq!(
            mask("cannot connect with Zq9-very-unusual-secret to x"),
            "cannot connect with **** to x"
        );
        register("abc"); // too short: masked by key and shape only
        assert_eq!(mask("abc"), "abc");
        register_pair("url", "postgres://u:Pw-from-uri-77@h/db");
        assert_eq!(mask("said Pw-from-uri-77"), "said ****");
    }

    #[test]
    fn display_value_masks_keys_and_shapes() {
        assert_eq!(display_value("connection.password", "x"), "****");
        assert_eq!(display_value("sasl.jaas.config", "x"), "****");
        assert_eq!(
            display_value("url", "postgresql://app:s3cret@db:5432/x?a=b"),
            "postgresql://app:****@db:5432/x?a=b"
        );
        assert_eq!(display_value("path", "data/x.csv"), "data/x.csv");
    }
}
