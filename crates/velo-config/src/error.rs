use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Who must act on an error; it decides retries and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Bad SQL, configuration or record: fix the input (exit code 1).
    User,
    /// A broker, store, database or file system failed or is unreachable:
    /// retrying may help (exit code 2).
    External,
    /// A bug in Velostream: report it (exit code 3).
    Internal,
}

impl ErrorKind {
    /// The process exit code of a run that stopped on such an error.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::External => 2,
            Self::Internal => 3,
        }
    }

    /// Whether retrying the same work may succeed.
    pub fn is_retryable(self) -> bool {
        self == Self::External
    }

    /// How messages name the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user error",
            Self::External => "external error",
            Self::Internal => "internal error",
        }
    }
}

/// A configuration problem. Every variant is a user error: it names the key,
/// file or variable at fault and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `'<name>.type'` is missing for a source.
    #[error(
        "Source type must be explicitly specified for '{0}'. Use: '{0}.type' with values like 'kafka_source', 'file_source', 'datagen'"
    )]
    MissingSourceType(String),
    /// `'<name>.type'` is missing for a sink.
    #[error(
        "Sink type must be explicitly specified for '{0}'. Use: '{0}.type' with values like 'kafka_sink', 'file_sink', 'stdout'"
    )]
    MissingSinkType(String),
    /// The type names the wrong role, e.g. `file_sink` used in FROM.
    #[error(
        "'{name}.type' = '{value}' declares a {declared}, but '{name}' is used as a {used} ({clause}); use '{suggestion}'"
    )]
    RoleMismatch {
        /// Source/sink name.
        name: String,
        /// The type value given.
        value: String,
        /// Role declared by the compound type.
        declared: &'static str,
        /// Role implied by the SQL.
        used: &'static str,
        /// FROM/JOIN or INTO.
        clause: &'static str,
        /// The type value that would fit.
        suggestion: String,
    },
    /// A `${VAR}` without default whose variable is not set.
    #[error(
        "environment variable '{var}' is not set (used in {origin}); set it or write '${{{var}:-default}}'"
    )]
    MissingVariable {
        /// The variable name.
        var: String,
        /// Where it was used.
        origin: String,
    },
    /// A malformed `${...}` expression.
    #[error(
        "malformed variable reference '{text}' in {origin}: expected ${{NAME}} or ${{NAME:-default}}"
    )]
    BadVariable {
        /// The offending text.
        text: String,
        /// Where it was used.
        origin: String,
    },
    /// `${A:-${B:-...}}` nested deeper than the resolver follows.
    #[error(
        "variable defaults in {origin} nest more than {depth} levels deep (${{A:-${{B:-...}}}}); write the default with fewer nested ${{...}}"
    )]
    NestedTooDeep {
        /// Where it was used.
        origin: String,
        /// The most levels followed.
        depth: usize,
    },
    /// `extends` chains that loop.
    #[error("config 'extends' cycle: {0}")]
    ExtendsCycle(String),
    /// A config file could not be read.
    #[error("cannot read '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A config file is not valid YAML or not a mapping.
    #[error("invalid YAML in config file '{path}': {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value of the wrong type.
    #[error("invalid value '{value}' for '{key}': expected {expected}")]
    InvalidValue {
        /// Full key as the user wrote it.
        key: String,
        /// The value (masked if secret).
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A required key is missing.
    #[error("missing required key '{key}': {hint}")]
    MissingKey {
        /// Full key.
        key: String,
        /// What to do.
        hint: String,
    },
    /// The connector type is not known.
    #[error("unknown {role} type '{value}' for '{name}'; known types: {known}")]
    UnknownType {
        /// Name of source/sink.
        name: String,
        /// Given type.
        value: String,
        /// source or sink.
        role: &'static str,
        /// The known ones.
        known: String,
    },
    /// A profile was selected that the global config does not define.
    #[error("profile '{profile}' is not defined in '{path}'; defined profiles: {known}")]
    UnknownProfile {
        /// Selected profile.
        profile: String,
        /// Global config file.
        path: PathBuf,
        /// Defined profiles.
        known: String,
    },
    /// A file that cannot be read as text (too large, not UTF-8, a directory).
    #[error("cannot read '{path}': it {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// A malformed URI in place of a source or sink name.
    #[error("invalid URI '{uri}': {message}")]
    BadUri {
        /// The URI.
        uri: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// Every configuration error is the user's to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}
