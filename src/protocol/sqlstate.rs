//! The SQLSTATE codes pglittle sends or acts on, by name (PostgreSQL's
//! Appendix A). Errors map to these in their `sqlstate()` methods.

pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const CONNECTION_FAILURE: &str = "08006";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const SERIALIZATION_FAILURE: &str = "40001";
pub const SYNTAX_ERROR: &str = "42601";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
pub const CONFIG_FILE_ERROR: &str = "F0000";
pub const INTERNAL_ERROR: &str = "XX000";

/// True when the five bytes an ErrorResponse carried are `name`.
pub fn is(code: &[u8; 5], name: &str) -> bool {
    code[..] == *name.as_bytes()
}
