//! Authentication primitives: SCRAM-SHA-256 and PostgreSQL's legacy md5 scheme.
//!
//! These are pure, allocation-light state machines with no I/O, so the
//! frontend (client-facing) and backend (server-facing) connection code can
//! drive them from whatever message loop they use, and so they can be tested
//! exhaustively without sockets.

pub mod md5;
pub mod scram;
use crate::protocol::sqlstate;

/// Everything that can go wrong while authenticating.
///
/// The variants are coarse on purpose: a client that fails authentication must
/// learn as little as possible about *why* (PostgreSQL itself answers every
/// password failure with the same message), while logs and config validation
/// still get a useful detail string where it is safe to have one.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The peer sent something that is not a well-formed SCRAM message.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// Channel binding failed: asked for where it was not offered, declined
    /// where it was (a downgrade), or bound to another TLS certificate.
    #[error("SCRAM channel binding failed")]
    ChannelBinding,
    /// The client's proof does not match the stored secret: wrong password.
    #[error("password authentication failed")]
    BadProof,
    /// A stored or configured SCRAM secret could not be parsed.
    #[error("invalid SCRAM secret: {0}")]
    BadSecret(String),
    /// We acted as the SCRAM client and the server could not prove it knows
    /// the secret, i.e. it is not the server we think it is.
    #[error("server signature mismatch")]
    ServerSignature,
}

impl AuthError {
    /// SQLSTATE to put in the ErrorResponse sent to our client.
    ///
    /// `BadSecret` maps to `28P01` rather than an internal-error code because a
    /// broken secret for one user should look exactly like a wrong password
    /// from the outside (PostgreSQL does the same). `ServerSignature` is a
    /// failure of *our* connection to the backend, hence `08006`
    /// (connection_failure) rather than an authorization code blaming the
    /// client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => sqlstate::PROTOCOL_VIOLATION,
            AuthError::ChannelBinding => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            AuthError::BadProof | AuthError::BadSecret(_) => sqlstate::INVALID_PASSWORD,
            AuthError::ServerSignature => sqlstate::CONNECTION_FAILURE,
        }
    }
}

/// Compare two byte strings without an early exit on the first difference.
///
/// Proofs, keys and md5 responses are compared with this so that response
/// timing does not reveal how many leading bytes of a guess were right. The
/// length is not secret (it is fixed by the hash), so a length mismatch may
/// return early.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into a
    // short-circuiting comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"\x00", b"\x80"));
    }

    #[test]
    fn sqlstates() {
        assert_eq!(AuthError::Malformed("x".into()).sqlstate(), "08P01");
        assert_eq!(AuthError::ChannelBinding.sqlstate(), "28000");
        assert_eq!(AuthError::BadProof.sqlstate(), "28P01");
        assert_eq!(AuthError::BadSecret("x".into()).sqlstate(), "28P01");
        assert_eq!(AuthError::ServerSignature.sqlstate(), "08006");
        assert_eq!(
            AuthError::Malformed("bad nonce".into()).to_string(),
            "malformed SCRAM message: bad nonce"
        );
    }
}
