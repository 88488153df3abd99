//! Tests that drive the velo process: signals, crashes, watch mode, memory.
