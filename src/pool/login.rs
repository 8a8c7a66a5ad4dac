//! Logging in to a server: the startup message, whichever password
//! exchange the server asks for, and the checks that the server really
//! let pglittle in before it is used.
//!
//! A server is logged in only after AuthenticationOk and, when the exchange
//! was SCRAM, after its server-final message proved that it knows the
//! password (`LoginCheck`). A cleartext password is sent only when
//! `server_allow_cleartext` is on.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::AsyncWriteExt;

use super::error::PoolError;
use super::server::{error_code_message, ServerAuth, ServerConn, ServerTarget};
use crate::protocol::auth::md5;
use crate::protocol::auth::scram::{Binding, ScramKeyClient};

/// Pure: the order of a server's login messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoginCheck {
    /// A SCRAM exchange started.
    sasl: bool,
    /// Its server-final message was verified.
    sasl_verified: bool,
    /// AuthenticationOk came.
    ok: bool,
}

impl LoginCheck {
    pub fn sasl_started(&mut self) {
        self.sasl = true;
    }

    pub fn sasl_verified(&mut self) -> Result<(), &'static str> {
        if !self.sasl || self.sasl_verified || self.ok {
            return Err("a SCRAM server-final message out of order");
        }
        self.sasl_verified = true;
        Ok(())
    }

    pub fn authentication_ok(&mut self) -> Result<(), &'static str> {
        if self.ok {
            return Err("AuthenticationOk twice");
        }
        if self.sasl && !self.sasl_verified {
            return Err("AuthenticationOk without finishing SCRAM (the server never proved it knows the password)");
        }
        self.ok = true;
        Ok(())
    }

    /// A message that only comes once the server has let us in
    /// (ParameterStatus, BackendKeyData, ReadyForQuery).
    pub fn logged_in(&self) -> Result<(), &'static str> {
        if self.ok {
            Ok(())
        } else {
            Err("session messages before AuthenticationOk")
        }
    }
}

/// The first SCRAM message, and the exchange that continues it.
enum Scram {
    Password(Box<ScramSha256>),
    Key(Box<ScramKeyClient>),
}

impl Scram {
    fn start(auth: &ServerAuth, binding: &Binding) -> Option<(Scram, Vec<u8>)> {
        match auth {
            ServerAuth::Password(p) => {
                let cb = match binding {
                    Binding::None => ChannelBinding::unsupported(),
                    Binding::NotOffered => ChannelBinding::unrequested(),
                    Binding::EndPoint(ep) => ChannelBinding::tls_server_end_point(ep.clone()),
                };
                let s = ScramSha256::new(p.as_bytes(), cb);
                let first = s.message().to_vec();
                Some((Scram::Password(Box::new(s)), first))
            }
            ServerAuth::ClientKey {
                client_key,
                server_key,
            } => {
                let mut k =
                    ScramKeyClient::new(*client_key, *server_key).with_binding(binding.clone());
                let first = k.client_first();
                Some((Scram::Key(Box::new(k)), first))
            }
            ServerAuth::Md5Secret(_) | ServerAuth::None => None,
        }
    }

    fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, PoolError> {
        Ok(match self {
            Scram::Password(s) => {
                s.update(data)?;
                s.message().to_vec()
            }
            Scram::Key(k) => k.server_first(data)?,
        })
    }

    fn server_final(&mut self, data: &[u8]) -> Result<(), PoolError> {
        match self {
            Scram::Password(s) => s.finish(data)?,
            Scram::Key(k) => k.server_final(data)?,
        }
        Ok(())
    }
}

impl ServerConn {
    pub(super) async fn login(
        &mut self,
        target: &ServerTarget,
        auth: &ServerAuth,
    ) -> Result<(), PoolError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", target.user.as_str()),
                ("database", target.dbname.as_str()),
            ],
            &mut out,
        )?;
        self.stream.write_all(&out).await?;
        let mut scram: Option<Scram> = None;
        let mut check = LoginCheck::default();
        let broken = |what: &'static str| PoolError::LoginBroken {
            addr: target.addr(),
            what,
        };
        loop {
            let msg = self.read_message().await?;
            out.clear();
            match msg {
                Message::AuthenticationOk => check.authentication_ok().map_err(broken)?,
                Message::AuthenticationSasl(body) => {
                    let binding = self.binding(target, body.mechanisms())?;
                    let (s, first) = Scram::start(auth, &binding)
                        .ok_or_else(|| unsupported(target, "SCRAM-SHA-256"))?;
                    scram = Some(s);
                    check.sasl_started();
                    frontend::sasl_initial_response(binding.mechanism(), &first, &mut out)?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| broken("SCRAM out of order"))?;
                    frontend::sasl_response(&s.server_first(body.data())?, &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| broken("SCRAM out of order"))?;
                    s.server_final(body.data())?;
                    check.sasl_verified().map_err(broken)?;
                }
                Message::ParameterStatus(p) => {
                    check.logged_in().map_err(broken)?;
                    self.params.set(p.name()?, p.value()?);
                }
                Message::BackendKeyData(k) => {
                    check.logged_in().map_err(broken)?;
                    self.pid = k.process_id();
                    self.secret = k.secret_key();
                }
                Message::ErrorResponse(e) => {
                    let (code, message) = error_code_message(e.fields())?;
                    return Err(PoolError::ServerRejected {
                        addr: target.addr(),
                        code,
                        message,
                    });
                }
                Message::ReadyForQuery(_) => {
                    check.logged_in().map_err(broken)?;
                    return Ok(());
                }
                Message::NoticeResponse(_) => {}
                other => password_reply(other, target, auth, &mut out)?,
            }
            if !out.is_empty() {
                self.stream.write_all(&out).await?;
            }
        }
    }
}

impl ServerConn {
    /// How to bind the server's SCRAM exchange: to its certificate when it
    /// offers SCRAM-SHA-256-PLUS over TLS, as libpq's channel_binding=prefer.
    fn binding<'a>(
        &self,
        target: &ServerTarget,
        mut mechs: impl FallibleIterator<Item = &'a str, Error = std::io::Error>,
    ) -> Result<Binding, PoolError> {
        let (mut plain, mut plus) = (false, false);
        while let Some(m) = mechs.next()? {
            plain |= m == "SCRAM-SHA-256";
            plus |= m == "SCRAM-SHA-256-PLUS";
        }
        if !plain && !plus {
            return Err(unsupported(target, "SASL without SCRAM-SHA-256"));
        }
        Ok(match self.stream.channel_binding() {
            None => Binding::None,
            Some(ep) if plus => Binding::EndPoint(ep),
            Some(_) => Binding::NotOffered,
        })
    }
}

/// The answer to a cleartext or md5 password request.
fn password_reply(
    msg: Message,
    target: &ServerTarget,
    auth: &ServerAuth,
    out: &mut BytesMut,
) -> Result<(), PoolError> {
    match msg {
        Message::AuthenticationCleartextPassword => {
            if !target.allow_cleartext {
                return Err(PoolError::CleartextRefused {
                    addr: target.addr(),
                });
            }
            let ServerAuth::Password(p) = auth else {
                return Err(unsupported(target, "cleartext password"));
            };
            frontend::password_message(p.as_bytes(), out)?;
        }
        Message::AuthenticationMd5Password(body) => {
            let hash = match auth {
                ServerAuth::Password(p) => postgres_protocol::authentication::md5_hash(
                    target.user.as_bytes(),
                    p.as_bytes(),
                    body.salt(),
                ),
                ServerAuth::Md5Secret(stored) => md5::md5_response(stored, body.salt()),
                _ => return Err(unsupported(target, "md5")),
            };
            frontend::password_message(hash.as_bytes(), out)?;
        }
        _ => return Err(unsupported(target, "an unknown method")),
    }
    Ok(())
}

fn unsupported(target: &ServerTarget, method: &str) -> PoolError {
    PoolError::UnsupportedAuth {
        addr: target.addr(),
        method: method.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_must_finish_before_authentication_ok() {
        let mut c = LoginCheck::default();
        c.sasl_started();
        assert!(c.authentication_ok().is_err());
        let mut c = LoginCheck::default();
        c.sasl_started();
        c.sasl_verified().unwrap();
        c.authentication_ok().unwrap();
        c.logged_in().unwrap();
    }

    #[test]
    fn nothing_counts_before_authentication_ok() {
        let mut c = LoginCheck::default();
        assert!(c.logged_in().is_err());
        assert!(
            c.sasl_verified().is_err(),
            "a final message with no exchange"
        );
        c.authentication_ok().unwrap(); // trust, md5, cleartext
        c.logged_in().unwrap();
        assert!(c.authentication_ok().is_err());
    }
}
