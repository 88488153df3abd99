//! The live size of a job's operator state (open windows, groups, join and
//! row-window rows, bytes), for the job's status and tests.

/// Live size of the window state (open windows and groups), for tests and
/// metrics.
#[derive(Debug, Default)]
pub struct WindowMetrics {
    /// Open windows (tumble/hop) or buffered rows of open sessions.
    pub open: std::sync::atomic::AtomicU64,
    /// Groups held across all open windows.
    pub groups: std::sync::atomic::AtomicU64,
    /// Bytes held by accumulators and group keys (and join state).
    pub bytes: std::sync::atomic::AtomicU64,
    /// Rows kept by stream-stream joins.
    pub join_rows: std::sync::atomic::AtomicU64,
    /// Keys with state in row windows (OVER).
    pub row_keys: std::sync::atomic::AtomicU64,
    /// Rows row windows keep (history and rows waiting to be final).
    pub row_rows: std::sync::atomic::AtomicU64,
}
