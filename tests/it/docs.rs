//! The committed configuration reference is the generated one, from the
//! connectors of this build.

#[test]
fn configuration_reference_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = velo_engine::docs::config_reference(&velostream::registry());
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `cargo run -q -- config-docs > docs/configuration.md`"
    );
}
