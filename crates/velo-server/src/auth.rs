//! Who may call the server: with `server.auth` configured, every REST and
//! Flight SQL call carries a bearer token or a basic user's credentials,
//! and anything else is refused (HTTP 401, gRPC UNAUTHENTICATED).
//!
//! ```yaml
//! server:
//!   auth:
//!     tokens: ["${VELO_TOKEN}"]        # bearer tokens (no commas in a token)
//!     users:
//!       alice: "${ALICE_PASSWORD}"     # basic users
//! ```
//!
//! A Flight SQL handshake with a basic user's credentials returns a bearer
//! token of its own (valid for [`ISSUED_FOR`]), which the client sends on
//! every later call: what ADBC and the JDBC driver do. Tokens and passwords
//! are compared in constant time and never logged or echoed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use subtle::ConstantTimeEq;
use velo_config::global::GlobalConfig;

use crate::error::{Result, ServerError};

/// How long a token issued by a handshake stays valid.
pub const ISSUED_FOR: Duration = Duration::from_secs(12 * 3600);

/// The credentials the server accepts.
pub struct Auth {
    tokens: Vec<String>,
    users: BTreeMap<String, String>,
    issued: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a call was refused (the message says what to send, never what was
/// sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Who a call is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer token (configured or issued).
    Token,
    /// A basic user, by name.
    User(String),
}

impl Auth {
    /// The `server.auth.*` keys of the global config, or `None` when
    /// neither tokens nor users are configured (no authentication).
    pub fn from_config(global: &GlobalConfig) -> Result<Option<Self>> {
        let tokens: Vec<String> = global
            .variables
            .get("server.auth.tokens")
            .map(|t| {
                t.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut users = BTreeMap::new();
        for (k, v) in &global.variables {
            if let Some(user) = k.strip_prefix("server.auth.users.") {
                if user.is_empty() || user.contains(':') || v.is_empty() {
                    return Err(ServerError::Config(format!(
                        "server.auth.users.{user}: a user needs a name without ':' and a non-empty password"
                    )));
                }
                users.insert(user.to_string(), v.clone());
            }
        }
        if let Some(k) = global.variables.keys().find(|k| {
            k.starts_with("server.auth.")
                && *k != "server.auth.tokens"
                && !k.starts_with("server.auth.users.")
        }) {
            return Err(ServerError::Config(format!(
                "'{k}' is not a key of server.auth: write 'tokens' (a list of bearer tokens) or 'users' (user: password)"
            )));
        }
        if tokens.iter().any(|t| t.len() < 16) {
            return Err(ServerError::Config(
                "a token of server.auth.tokens is shorter than 16 characters: use a long random one (openssl rand -hex 32)".into(),
            ));
        }
        if tokens.is_empty() && users.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            tokens,
            users,
            issued: Mutex::default(),
        }))
    }

    /// Whether basic users are configured (the REST API then asks a
    /// browser for them).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `authorization` header.
    pub fn check(&self, header: Option<&str>) -> std::result::Result<Caller, Refused> {
        let Some(h) = header.map(str::trim) else {
            return Err(Refused(
                "credentials required: send 'authorization: Bearer <token>' or a basic user's credentials",
            ));
        };
        if let Some(t) = strip_scheme(h, "bearer") {
            return if self.token_ok(t.trim()) {
                Ok(Caller::Token)
            } else {
                Err(Refused(
                    "the bearer token is not valid (or has expired): use a token of server.auth.tokens or do a new handshake",
                ))
            };
        }
        if let Some(b) = strip_scheme(h, "basic") {
            return self.user_of(b.trim()).map(Caller::User);
        }
        Err(Refused(
            "unsupported authorization scheme: send 'Bearer <token>' or 'Basic <base64 user:password>'",
        ))
    }

    fn token_ok(&self, t: &str) -> bool {
        if self.tokens.iter().any(|k| same(k.as_bytes(), t.as_bytes())) {
            return true;
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, at| at.elapsed() < ISSUED_FOR);
        issued.keys().any(|k| same(k.as_bytes(), t.as_bytes()))
    }

    fn user_of(&self, b64: &str) -> std::result::Result<String, Refused> {
        let bad = Refused("the basic credentials are not valid");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad.clone())?;
        let text = String::from_utf8(raw).map_err(|_| bad.clone())?;
        let (user, password) = text.split_once(':').ok_or(bad.clone())?;
        // every configured user is compared, so that the time taken does
        // not say which names exist
        let mut found = false;
        for (u, p) in &self.users {
            found |= same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.as_bytes());
        }
        if found {
            Ok(user.to_string())
        } else {
            Err(bad)
        }
    }

    /// A new bearer token for a caller who proved who they are.
    pub fn issue(&self) -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), Instant::now());
        token
    }
}

/// `h` without its scheme word (case-insensitive) and the space after it.
fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (word, rest) = h.split_once(' ')?;
    word.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Constant-time equality (subtle's; the time depends on the lengths only).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(vars: &[(&str, &str)]) -> Result<Option<Auth>> {
        Auth::from_config(&GlobalConfig {
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn tokens_users_and_issued_tokens() {
        assert!(auth(&[]).unwrap().is_none());
        let a = auth(&[
            (
                "server.auth.tokens",
                "0123456789abcdef0123,fedcba9876543210fedc",
            ),
            ("server.auth.users.alice", "s3cret:with:colons"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            a.check(Some("Bearer fedcba9876543210fedc")),
            Ok(Caller::Token)
        );
        assert!(a.check(Some("Bearer fedcba9876543210fedX")).is_err());
        assert!(a.check(Some("Bearer fedcba9876543210fed")).is_err());
        assert!(a.check(None).is_err());
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        assert_eq!(
            a.check(Some(&format!("basic {basic}"))),
            Ok(Caller::User("alice".into()))
        );
        let wrong = base64::engine::general_purpose::STANDARD.encode("alice:nope");
        assert!(a.check(Some(&format!("Basic {wrong}"))).is_err());
        assert!(a.check(Some("Basic !!!")).is_err());
        let t = a.issue();
        assert_eq!(a.check(Some(&format!("Bearer {t}"))), Ok(Caller::Token));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(auth(&[("server.auth.tokens", "short")]).is_err());
        assert!(auth(&[("server.auth.user.bob", "x")]).is_err());
        assert!(auth(&[("server.auth.users.bob", "")]).is_err());
    }
}
