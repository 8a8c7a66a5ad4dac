//! pglittle's one parameterised query of its own: `auth_query`, which
//! fetches a user's password secret. The user name travels as a bound
//! parameter (extended protocol), never spliced into the SQL text.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::error::PoolError;
use super::server::{QueryOutcome, ServerConn};
use crate::protocol::frontend;

impl ServerConn {
    /// Runs `sql` with `$1` bound to `param` (text) and returns its rows.
    /// A server error is returned as `PoolError::LookupFailed`.
    pub async fn query_with_param(
        &mut self,
        sql: &str,
        param: &str,
        timeout: Duration,
    ) -> Result<Vec<Vec<Option<String>>>, PoolError> {
        let mut out = BytesMut::new();
        frontend::encode_parse(&mut out, b"", sql.as_bytes(), &0u16.to_be_bytes());
        frontend::encode_bind(&mut out, b"", b"", &bind_text_param(param));
        out.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        let work = async {
            self.finish_reset(timeout).await?;
            self.stream.write_all(&out).await?;
            self.statements.unnamed = None;
            let mut outcome = QueryOutcome::default();
            self.read_cycle(&mut outcome).await?;
            Ok::<_, PoolError>(outcome)
        };
        let outcome = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| PoolError::Unresponsive(timeout))??;
        match outcome.error {
            None => Ok(outcome.rows),
            Some((code, message)) => Err(PoolError::LookupFailed { code, message }),
        }
    }
}

/// The part of a Bind after the two names: no format codes (all text),
/// one parameter, no result format codes (all text).
fn bind_text_param(param: &str) -> Vec<u8> {
    let mut rest = Vec::with_capacity(param.len() + 10);
    rest.put_u16(0);
    rest.put_u16(1);
    rest.put_i32(param.len() as i32);
    rest.extend_from_slice(param.as_bytes());
    rest.put_u16(0);
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameter_is_length_prefixed_text() {
        let rest = bind_text_param("al'ice");
        assert_eq!(&rest[..4], &[0, 0, 0, 1]);
        assert_eq!(&rest[4..8], &6i32.to_be_bytes());
        assert_eq!(&rest[8..14], b"al'ice");
        assert_eq!(&rest[14..], &[0, 0]);
    }
}
