//! Fuzz target `checkpoint`: see `velo_engine::fuzzing::checkpoint`.
//!
//! arrow-ipc panics on some damaged files (an upstream defect); velo
//! contains it (`catch_unwind` in the checkpoint reader) and reports the
//! file as damaged. libfuzzer-sys aborts on every panic, also a caught one,
//! so this target puts Rust's own panic hook back: a panic velo contains
//! is not a crash, one that escapes still is (libfuzzer-sys catches it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    velo_engine::fuzzing::checkpoint(data)
});
