//! The real `pglittle` binary: CLI, sidecar mode, signals.
