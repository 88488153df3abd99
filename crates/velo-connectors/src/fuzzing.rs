//! Fuzzing entry point of the file decoders (`fuzz/`, and the regression
//! test that replays its corpus): arbitrary bytes as a CSV, JSON Lines or
//! JSON array file, read through the file source as a job reads it (schema
//! inference or a declared schema, encoding and line-ending sniffing, unit
//! splitting, decoding, bad-record isolation). Records may be bad; the
//! source must never panic, hang or abort.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::file::{FileSource, FileSourceConfig};
use crate::{Source, SourceEvent};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fuzz target")
});

/// One fuzz input: its first byte chooses the format and whether the
/// schema is declared; the rest is the file.
pub fn lines(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let (format, ext) = match which % 3 {
        0 => ("jsonl", "jsonl"),
        1 => ("csv", "csv"),
        _ => ("json", "json"),
    };
    let path = dir.path().join(format!("in.{ext}"));
    if std::fs::write(&path, body).is_err() {
        return;
    }
    let mut props = BTreeMap::from([
        ("path".to_string(), path.to_string_lossy().into_owned()),
        ("format".to_string(), format.to_string()),
        ("batch_size".to_string(), "7".to_string()),
    ]);
    if which & 8 != 0 {
        props.insert("has_headers".into(), "false".into());
    }
    let declared = (which & 4 != 0).then(|| {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Float64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            ),
        ]))
    });
    let cfg = velo_config::ConnectorConfig {
        name: "fuzz".into(),
        role: velo_config::Role::Source,
        kind: "file".into(),
        props,
        origin: velo_config::Origin::Named,
        base_dir: dir.path().to_path_buf(),
        job: "fuzz".into(),
    };
    let Ok(fc) = FileSourceConfig::from_config(&cfg) else {
        return;
    };
    let files = crate::file::listing::Files::Local {
        path: fc.path.clone(),
    };
    let Ok(src) = FileSource::new("fuzz", fc, declared, files) else {
        return;
    };
    let Ok(mut reader) = src.open(5, None) else {
        return;
    };
    RUNTIME.block_on(async {
        while let Some(ev) = reader.next().await {
            if let SourceEvent::Error(_) = ev {
                break;
            }
        }
    });
}
