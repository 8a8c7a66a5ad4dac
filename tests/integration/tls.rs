//! Issue 14: TLS between clients and pglittle, against the real primary.
//! Clients are tokio-postgres over rustls (a small connector below), libpq
//! (psql), and raw sockets for what no driver here sends (GSSENCRequest,
//! PostgreSQL 17's direct TLS).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pgcluster::{APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER};
use pglittle::config::TlsMode;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect};

use crate::common::*;

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate for the md5 user, as PEM files in a directory of their own.
pub(crate) struct Certs {
    dir: PathBuf,
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Certs {
    pub(crate) fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("pglittle-tls-{name}-{}", std::process::id()));
        Certs::new_in(dir, name)
    }

    /// As `new`, in `dir` (for certificates that outlive every test: inside
    /// the cluster's directory, which its watchdog removes at exit).
    pub(crate) fn new_in(dir: PathBuf, name: &str) -> Certs {
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("pglittle test CA {name}"),
        );
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let certs = Certs { dir, ca, issuer };
        certs.leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "pglittle",
            "server",
        );
        certs.leaf(vec![], MD5_USER, "client");
        std::fs::write(certs.dir.join("ca.crt"), certs.ca.pem()).unwrap();
        certs
    }

    /// A certificate for `names` (common name `cn`) signed by this CA, as
    /// `{stem}.crt` and `{stem}.key`.
    pub(crate) fn leaf(&self, names: Vec<String>, cn: &str, stem: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        // libpq refuses a client key others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A pooler config offering TLS in `mode` with these files.
    pub(crate) fn config(&self, mode: TlsMode) -> pglittle::config::Config {
        let mut cfg = config();
        let t = &mut cfg.pooler.client_tls;
        t.mode = mode;
        t.cert_file = Some(self.path("server.crt"));
        t.key_file = Some(self.path("server.key"));
        t.ca_file = Some(self.path("ca.crt"));
        cfg
    }

    /// A rustls client that trusts this CA (and, optionally, presents the
    /// client certificate), offering `alpn`.
    pub(crate) fn client(&self, with_cert: bool, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = if with_cert {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(self.path("client.crt"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(self.path("client.key")).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tokio-postgres over rustls: the connector a TLS-speaking app would use.
struct Rustls(Arc<rustls::ClientConfig>);

struct RustlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl TlsConnect<TcpStream> for Rustls {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from("localhost").unwrap();
            let s = tokio_rustls::TlsConnector::from(self.0)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(s))
        })
    }
}

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Connects tokio-postgres to pglittle with `sslmode`, over rustls.
pub(crate) async fn connect_tls(
    port: u16,
    sslmode: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB} sslmode={sslmode}"
    );
    let cfg: tokio_postgres::Config = conninfo.parse().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (client, conn) = cfg.connect_raw(tcp, Rustls(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// psql through pglittle on `port` as `user`, with `extra` parameters.
fn psql_as(port: u16, user: &str, password: &str, extra: &str, sql: &str) -> std::process::Output {
    let conninfo = format!(
        "host=127.0.0.1 port={port} dbname={APP_DB} user={user} password={password} {extra}"
    );
    psql_conn(&conninfo, sql)
}

/// As the md5 user (`app_md5`, the client certificate's CN).
fn psql(port: u16, extra: &str, sql: &str) -> std::process::Output {
    psql_as(port, MD5_USER, MD5_PASSWORD, extra, sql)
}

/// As the SCRAM user `app`.
pub(crate) fn psql_app(port: u16, extra: &str, sql: &str) -> std::process::Output {
    psql_as(port, APP_USER, APP_PASSWORD, extra, sql)
}

// The client asks (SSLRequest), gets TLS, and works; with TLS required, a
// plain-text login is refused with 28000 naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_when_asked_and_plain_text_is_refused_when_required() {
    let certs = Certs::new("require");
    let p = pooler(certs.config(TlsMode::Require)).await;
    let c = connect_tls(p.port, "require", certs.client(false, &[]))
        .await
        .expect("a TLS client is served");
    assert_eq!(scalar(&c, "select 1").await, "1");
    // Over a pool of servers, many queries and a large reply.
    let big = scalar(&c, "select repeat('x', 300000)").await;
    assert_eq!(big.len(), 300_000);
    // libpq says the connection is encrypted.
    let out = psql(
        p.port,
        &format!(
            "sslmode=verify-full sslrootcert={}",
            certs.path("ca.crt").display()
        ),
        "\\conninfo",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("SSL connection"),
        "{}",
        output_text(&out)
    );
    // Plain text: refused, and told why.
    let e = p
        .connect_as(APP_USER, APP_PASSWORD)
        .await
        .expect_err("plain text served");
    assert_eq!(code(&e), "28000", "{e}");
    let said = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        said.as_deref()
            .is_some_and(|m| m.contains("client_tls_mode")),
        "{said:?}"
    );
    let out = psql(p.port, "sslmode=disable", "select 1");
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("client_tls_mode"),
        "{}",
        output_text(&out)
    );
}

// With TLS off, a client that asks is answered 'N' and goes on in plain
// text (sslmode=prefer), and one that insists is refused by its driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_off_an_sslrequest_is_declined_and_the_login_goes_on() {
    let p = pooler(config()).await;
    let out = psql(p.port, "sslmode=prefer", "select 2");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let out = psql(p.port, "sslmode=require", "select 2");
    assert!(
        !out.status.success(),
        "TLS without an offer: {}",
        output_text(&out)
    );
}

// A GSSENCRequest is answered 'N'; the client may then ask for TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_is_declined_then_tls_is_given() {
    let certs = Certs::new("gss");
    let p = pooler(certs.config(TlsMode::Prefer)).await;
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let request = |code: u32| [8u32.to_be_bytes(), code.to_be_bytes()].concat();
    s.write_all(&request(80_877_104)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'N');
    s.write_all(&request(80_877_103)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'S');
    let tls = tokio_rustls::TlsConnector::from(certs.client(false, &[]))
        .connect(ServerName::try_from("localhost").unwrap(), s)
        .await;
    let mut tls = tls.expect("TLS after the declined GSSENCRequest");
    assert_eq!(
        startup_reply(&mut tls).await,
        Some(b'R'),
        "no authentication request over TLS"
    );
}

/// Sends a StartupMessage for the app user; the first reply's tag.
async fn startup_reply<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Option<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in [("user", APP_USER), ("database", APP_DB)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).await.ok()?;
    s.flush().await.ok()?;
    s.read_u8().await.ok()
}

// PostgreSQL 17's direct TLS: a TLS handshake at once, with ALPN
// "postgresql"; without that ALPN the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_the_postgresql_alpn() {
    let certs = Certs::new("direct");
    let p = pooler(certs.config(TlsMode::Require)).await;
    let name = ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(certs.client(false, &[b"postgresql"]))
        .connect(name.clone(), tcp)
        .await
        .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    assert_eq!(startup_reply(&mut tls).await, Some(b'R'));
    // No ALPN: the handshake may finish, but nothing is served.
    let tcp = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let refused = match tokio_rustls::TlsConnector::from(certs.client(false, &[]))
        .connect(name, tcp)
        .await
    {
        Err(_) => true,
        Ok(mut tls) => startup_reply(&mut tls).await.is_none(),
    };
    assert!(refused, "direct TLS without ALPN was served");
}

// verify-ca: a client certificate signed by client_tls_ca_file is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_needs_a_client_certificate_from_the_ca() {
    let certs = Certs::new("verify");
    let p = pooler(certs.config(TlsMode::VerifyCa)).await;
    let with = format!(
        "sslmode=require sslcert={} sslkey={}",
        certs.path("client.crt").display(),
        certs.path("client.key").display()
    );
    let out = psql(p.port, &with, "select 3");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let e = connect_tls(p.port, "require", certs.client(false, &[])).await;
    assert!(e.is_err(), "served without a client certificate");
    let c = connect_tls(p.port, "require", certs.client(true, &[]))
        .await
        .expect("served with the client certificate");
    assert_eq!(scalar(&c, "select 4").await, "4");
}

// RELOAD re-reads the files: new connections get the new certificate (a
// new CA here), and a client connected before keeps its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_gives_new_connections_the_new_certificate_and_drops_nobody() {
    let old = Certs::new("reload-old");
    let new = Certs::new("reload-new");
    let p = pooler(old.config(TlsMode::Require)).await;
    let before = connect_tls(p.port, "require", old.client(false, &[]))
        .await
        .expect("old certificate");
    assert!(connect_tls(p.port, "require", new.client(false, &[]))
        .await
        .is_err());
    p.running.reload(new.config(TlsMode::Require));
    let after = connect_tls(p.port, "require", new.client(false, &[]))
        .await
        .expect("new certificate after RELOAD");
    assert_eq!(scalar(&after, "select 5").await, "5");
    assert!(connect_tls(p.port, "require", old.client(false, &[]))
        .await
        .is_err());
    assert_eq!(
        scalar(&before, "select 6").await,
        "6",
        "the connected client was dropped"
    );
    // Files that cannot be read leave the working setup in place.
    let mut broken = new.config(TlsMode::Require);
    broken.pooler.client_tls.cert_file = Some(Path::new("/nonexistent/cert.pem").into());
    p.running.reload(broken);
    let again = connect_tls(p.port, "require", new.client(false, &[]))
        .await
        .expect("still served after a failed reload");
    assert_eq!(scalar(&again, "select 7").await, "7");
}

/// Turns TLS on in the shared primary, once per test process: a server
/// certificate for 127.0.0.1 signed by a CA of its own, `ssl = on`, and a
/// configuration reload (plain connections keep working).
pub(crate) async fn primary_with_tls() -> &'static Certs {
    static CERTS: tokio::sync::OnceCell<Certs> = tokio::sync::OnceCell::const_new();
    CERTS
        .get_or_init(|| async {
            // Kept for the whole run (a static): inside the cluster's
            // directory, so the cluster's watchdog removes it at exit.
            let certs = Certs::new_in(cluster().base_dir().join("tls-certs"), "primary");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&certs.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let admin = superuser().await;
            serve_certificate(&admin, &certs, "server").await;
            for sql in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
                admin.batch_execute(sql).await.unwrap();
            }
            let on = eventually(std::time::Duration::from_secs(10), || async {
                scalar(&admin, "SHOW ssl").await == "on"
            })
            .await;
            assert!(on, "the primary did not turn TLS on");
            certs
        })
        .await
}

/// Points the primary at `{stem}.crt` and `{stem}.key` of `certs` (owned
/// by PostgreSQL's user, which it insists on for the key) and reloads.
async fn serve_certificate(admin: &tokio_postgres::Client, certs: &Certs, stem: &str) {
    let data = std::fs::metadata(&cluster().primary.data_dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    for ext in ["crt", "key"] {
        let f = certs.path(&format!("{stem}.{ext}"));
        std::os::unix::fs::chown(f, Some(data.uid()), Some(data.gid())).unwrap();
    }
    let set = |k: &str, ext: &str| {
        format!(
            "ALTER SYSTEM SET {k} = '{}'",
            certs.path(&format!("{stem}.{ext}")).display()
        )
    };
    for sql in [
        set("ssl_cert_file", "crt"),
        set("ssl_key_file", "key"),
        "SELECT pg_reload_conf()".into(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
}

/// The certificate the primary presents now.
async fn presented_certificate(certs: &Certs) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", cluster().primary.port))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(certs.client(false, &[]))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

// The primary rotates its certificate (a new key, the same CA): connected
// clients keep their servers, and pglittle's new server connections verify
// the new certificate (verify-full) and bind SCRAM to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_rotation_is_picked_up_by_new_connections() {
    let certs = primary_with_tls().await;
    let mut cfg = config();
    cfg.pooler.pool_size = 1.into();
    cfg.pooler.server_tls.mode = TlsMode::VerifyFull;
    cfg.pooler.server_tls.ca_file = Some(certs.path("ca.crt"));
    let p = pooler(cfg).await;
    let a = p.connect().await;
    let old_pid = scalar(&a, "select pg_backend_pid()").await;
    assert_eq!(server_side_ssl(&a).await, "t");
    let stem = format!("rotated-{}", std::process::id());
    certs.leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        "pglittle rotated",
        &stem,
    );
    let admin = superuser().await;
    serve_certificate(&admin, certs, &stem).await;
    let new_der = pem_der(&certs.path(&format!("{stem}.crt")));
    let rotated = eventually(std::time::Duration::from_secs(10), || async {
        presented_certificate(certs).await == new_der
    })
    .await;
    assert!(rotated, "the primary did not take the new certificate");
    // The connected client's server (TLS set up under the old one) goes on.
    assert_eq!(scalar(&a, "select pg_backend_pid()").await, old_pid);
    // A new server connection: verified against the same CA, bound to the
    // new certificate (a stale binding would fail the login).
    admin
        .simple_query(&format!("select pg_terminate_backend({old_pid})"))
        .await
        .unwrap();
    let b = p.connect().await;
    let served = eventually(std::time::Duration::from_secs(10), || async {
        let pid = scalar(&b, "select pg_backend_pid()").await;
        pid != old_pid
    })
    .await;
    assert!(served, "no new server connection");
    assert_eq!(server_side_ssl(&b).await, "t");
}

/// What a client of `p` is told when pglittle's server login fails: at its
/// own login (when that needs a server) or at its first query; `what`
/// names what must not have worked.
async fn server_refusal(
    p: &Pooler,
    user: &str,
    password: &str,
    what: &str,
) -> tokio_postgres::Error {
    match p.connect_as(user, password).await {
        Err(e) => e,
        Ok(c) => c.simple_query("select 1").await.expect_err(what),
    }
}

/// The message of the ErrorResponse in `e` ("" when there was none).
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

/// Whether pglittle's server connection (the one serving `c`) is encrypted.
async fn server_side_ssl(c: &tokio_postgres::Client) -> String {
    scalar(
        c,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
}

// server_tls_mode: require encrypts (certificate unchecked, as libpq's
// require), verify-full checks the chain and the host name, and a wrong CA
// is refused with the host and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_use_tls_as_server_tls_mode_says() {
    let certs = primary_with_tls().await;
    let mut cfg = config();
    cfg.pooler.server_tls.mode = TlsMode::Require;
    let p = pooler(cfg).await;
    let c = p.connect().await;
    assert_eq!(server_side_ssl(&c).await, "t");
    let big = scalar(&c, "select repeat('y', 200000)").await;
    assert_eq!(big.len(), 200_000);
    // An idle TLS server that is terminated (its FATAL arrives encrypted)
    // is seen as gone at the next lend: the client is served by a new one.
    let pid = scalar(&c, "select pg_backend_pid()").await;
    let admin = superuser().await;
    admin
        .simple_query(&format!("select pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let gone = eventually(std::time::Duration::from_secs(10), || async {
        scalar(
            &admin,
            &format!("select count(*) from pg_stat_activity where pid = {pid}"),
        )
        .await
            == "0"
    })
    .await;
    assert!(gone);
    assert_ne!(scalar(&c, "select pg_backend_pid()").await, pid);
    assert_eq!(server_side_ssl(&c).await, "t");
    // A server that offers no TLS (the replica has it off): refused.
    let mut cfg = config();
    cfg.pooler.server_tls.mode = TlsMode::Require;
    let replica = cluster().replica.as_ref().expect("a replica");
    cfg.databases.get_mut(APP_DB).unwrap().port = replica.port;
    let p = pooler(cfg).await;
    let e = server_refusal(&p, APP_USER, APP_PASSWORD, "served without TLS").await;
    let said = message(&e);
    assert!(said.contains("does not offer TLS"), "{said}");
    // Without it, the same server is used in plain text.
    let plain = pooler(config()).await;
    assert_eq!(server_side_ssl(&plain.connect().await).await, "f");
    // verify-full against the right CA (the certificate names 127.0.0.1).
    let mut cfg = config();
    cfg.pooler.server_tls.mode = TlsMode::VerifyFull;
    cfg.pooler.server_tls.ca_file = Some(certs.path("ca.crt"));
    let p = pooler(cfg).await;
    assert_eq!(server_side_ssl(&p.connect().await).await, "t");
    // A CA that did not sign it: refused, and the client is told why.
    let other = Certs::new("other-ca");
    let mut cfg = config();
    cfg.pooler.server_tls.mode = TlsMode::VerifyCa;
    cfg.pooler.server_tls.ca_file = Some(other.path("ca.crt"));
    cfg.pooler.query_wait_timeout = std::time::Duration::from_secs(3);
    let p = pooler(cfg).await;
    let e = server_refusal(&p, APP_USER, APP_PASSWORD, "an unknown CA was trusted").await;
    assert_eq!(code(&e), "08006", "{e:?}");
    let said = message(&e);
    assert!(said.contains("TLS to server 127.0.0.1"), "{said}");
    assert!(said.contains("certificate"), "{said}");
}

/// A man in the middle: accepts TLS with its own certificate (`certs`'
/// server certificate) and speaks TLS on to pglittle (trusting
/// `onward_ca`), passing the bytes between. A client that does not check the certificate (sslmode=require)
/// cannot tell, unless channel binding does.
async fn man_in_the_middle(certs: &Certs, onward_ca: &Certs, target: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_file_iter(certs.path("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(certs.path("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let onward = onward_ca.client(false, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (acceptor, onward) = (acceptor.clone(), onward.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                inbound.read_exact(&mut request).await.ok()?;
                inbound.write_all(b"S").await.ok()?;
                let mut client_side = acceptor.accept(inbound).await.ok()?;
                let mut tcp = TcpStream::connect(("127.0.0.1", target)).await.ok()?;
                tcp.write_all(&request).await.ok()?;
                (tcp.read_u8().await.ok()? == b'S').then_some(())?;
                let name = ServerName::try_from("localhost").unwrap();
                let mut server_side = tokio_rustls::TlsConnector::from(onward)
                    .connect(name, tcp)
                    .await
                    .ok()?;
                tokio::io::copy_bidirectional(&mut client_side, &mut server_side)
                    .await
                    .ok()
            });
        }
    });
    port
}

// SCRAM-SHA-256-PLUS: libpq's channel_binding=require works through
// pglittle over TLS; without TLS it cannot be had; and a man in the middle
// with another certificate (invisible to sslmode=require) fails the binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_works_and_catches_a_man_in_the_middle() {
    let certs = Certs::new("binding");
    let p = pooler(certs.config(TlsMode::Prefer)).await;
    let out = psql_app(
        p.port,
        "sslmode=require channel_binding=require",
        "select 8",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
    let out = psql_app(
        p.port,
        "sslmode=disable channel_binding=require",
        "select 8",
    );
    assert!(
        !out.status.success(),
        "bound without TLS: {}",
        output_text(&out)
    );
    // The middle presents a certificate of another CA.
    let other = Certs::new("binding-mitm");
    let mitm = man_in_the_middle(&other, &certs, p.port).await;
    // Without binding, the client is fooled (it checks no certificate)...
    let out = psql_app(mitm, "sslmode=require channel_binding=disable", "select 9");
    assert!(
        out.status.success(),
        "the relay itself works: {}",
        output_text(&out)
    );
    // ...with it, the login fails: the client bound to the middle's
    // certificate, pglittle to its own.
    let out = psql_app(mitm, "sslmode=require channel_binding=require", "select 9");
    assert!(!out.status.success(), "a man in the middle was not caught");
    assert!(
        output_text(&out).contains("channel binding"),
        "{}",
        output_text(&out)
    );
}

// auth = "cert": a client certificate verified against the CA logs in the
// user its common name names, with no password; a certificate for another
// user is refused with 28000; and the setting needs verified certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_logs_in_the_user_the_certificate_names() {
    let certs = Certs::new("cert-auth");
    let mut cfg = certs.config(TlsMode::VerifyCa);
    for user in [MD5_USER, APP_USER] {
        cfg.users.get_mut(user).unwrap().auth = pglittle::config::AuthMethod::Cert;
    }
    let p = pooler(cfg).await;
    let with_cert = format!(
        "sslmode=require sslcert={} sslkey={}",
        certs.path("client.crt").display(),
        certs.path("client.key").display()
    );
    // The certificate is for app_md5 (CN), and no password is asked.
    let out = psql(
        p.port,
        &format!("{with_cert} password=wrong"),
        "select current_user",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), MD5_USER);
    // The same certificate for another user: refused, and told why.
    let out = psql_app(p.port, &with_cert, "select 1");
    assert!(
        !out.status.success(),
        "a certificate for another user was taken"
    );
    assert!(
        output_text(&out).contains("certificate authentication failed"),
        "{}",
        output_text(&out)
    );
    // Unverified certificates cannot vouch for anyone.
    let mut cfg = certs.config(TlsMode::Require);
    cfg.users.get_mut(MD5_USER).unwrap().auth = pglittle::config::AuthMethod::Cert;
    let e = cfg.validate().expect_err("cert auth without verify-ca");
    assert!(e.to_string().contains("client_tls_mode"), "{e}");
}

// Towards servers, pglittle binds SCRAM to the server's certificate when
// the server offers SCRAM-SHA-256-PLUS (PostgreSQL does over TLS): with a
// password and with SCRAM pass-through alike. A man in the middle that
// server_tls_mode = "require" does not notice (it checks no certificate)
// then fails the server's login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_logins_bind_to_the_server_certificate() {
    let certs = primary_with_tls().await;
    let secret = scalar(
        &superuser().await,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
    )
    .await;
    let tls_config = |port: u16| {
        let mut cfg = config();
        cfg.pooler.server_tls.mode = TlsMode::Require;
        cfg.pooler.query_wait_timeout = std::time::Duration::from_secs(3);
        cfg.databases.get_mut(APP_DB).unwrap().port = port;
        cfg
    };
    let primary = cluster().primary.port;
    let p = pooler(tls_config(primary)).await;
    assert_eq!(server_side_ssl(&p.connect().await).await, "t");
    // Pass-through: pglittle knows only the secret.
    let mut cfg = tls_config(primary);
    let app = cfg.users.get_mut(APP_USER).unwrap();
    (app.password, app.scram_secret) = (None, Some(secret));
    let p = pooler(cfg).await;
    assert_eq!(server_side_ssl(&p.connect().await).await, "t");
    // The middle presents a certificate of another CA to pglittle.
    let other = Certs::new("server-mitm");
    let mitm = man_in_the_middle(&other, certs, primary).await;
    let p = pooler(tls_config(mitm)).await;
    let e = server_refusal(
        &p,
        APP_USER,
        APP_PASSWORD,
        "logged in through a man in the middle",
    )
    .await;
    let said = message(&e);
    assert!(said.contains("channel binding"), "{e:?}");
}

/// Two roles the primary's pg_hba.conf treats specially, once per run:
/// `tls_only` may log in (scram-sha-256) only over TLS (`hostssl`), and
/// `tls_cert` only with a client certificate naming it (`cert`), checked
/// against the primary's CA (`ssl_ca_file`).
async fn primary_with_hba() -> &'static Certs {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let certs = primary_with_tls().await;
    DONE.get_or_init(|| async {
        certs.leaf(vec![], "tls_cert", "tls_cert");
        let hba = cluster().primary.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        let rules = "hostssl all tls_only 127.0.0.1/32 scram-sha-256\n\
                     host    all tls_only 127.0.0.1/32 reject\n\
                     hostssl all tls_cert 127.0.0.1/32 cert\n\
                     host    all tls_cert 127.0.0.1/32 reject\n";
        std::fs::write(&hba, format!("{rules}{old}")).unwrap();
        let admin = superuser().await;
        let ca = certs.path("ca.crt").display().to_string();
        for sql in [
            "do $$ begin if not exists (select from pg_roles where rolname = 'tls_only') then \
             create role tls_only login password 'tls-only-pw'; end if; end $$"
                .to_string(),
            "do $$ begin if not exists (select from pg_roles where rolname = 'tls_cert') then \
             create role tls_cert login; end if; end $$"
                .to_string(),
            format!("ALTER SYSTEM SET ssl_ca_file = '{ca}'"),
            "SELECT pg_reload_conf()".into(),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        let loaded = eventually(std::time::Duration::from_secs(10), || async {
            scalar(&admin, "SHOW ssl_ca_file").await == ca
        })
        .await;
        assert!(loaded, "the primary did not load ssl_ca_file");
    })
    .await;
    certs
}

// Each server_tls_mode against a role the server admits only over TLS
// (hostssl): disable is refused by the server (its message reaches the
// client), allow tries plain text and then TLS, prefer and the rest use
// TLS. For a role admitted either way, allow stays in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_tls_mode_against_a_hostssl_only_role() {
    let certs = primary_with_hba().await;
    let run = |mode: TlsMode, user: &'static str| async move {
        let mut cfg = config();
        cfg.pooler.server_tls.mode = mode;
        cfg.pooler.server_tls.ca_file = Some(certs.path("ca.crt"));
        cfg.pooler.query_wait_timeout = std::time::Duration::from_secs(3);
        let password = format!("{}-pw", user.replace('_', "-"));
        if user == "tls_only" {
            cfg.users.insert(
                user.into(),
                crate::common::user(&password, pglittle::config::AuthMethod::Md5),
            );
        }
        let p = pooler(cfg).await;
        let login = if user == "tls_only" {
            p.connect_as(user, &password).await
        } else {
            p.connect_as(APP_USER, APP_PASSWORD).await
        };
        match login {
            Ok(c) => match c.simple_query("select 1").await {
                Ok(_) => Ok(server_side_ssl(&c).await),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("{e:?}")),
        }
    };
    let refused = run(TlsMode::Disable, "tls_only").await.unwrap_err();
    assert!(refused.contains("no encryption"), "{refused}");
    for mode in [
        TlsMode::Allow,
        TlsMode::Prefer,
        TlsMode::Require,
        TlsMode::VerifyCa,
        TlsMode::VerifyFull,
    ] {
        assert_eq!(run(mode, "tls_only").await, Ok("t".into()), "{mode:?}");
    }
    assert_eq!(run(TlsMode::Allow, "app").await, Ok("f".into()));
    assert_eq!(run(TlsMode::Prefer, "app").await, Ok("t".into()));
}

// A server that wants a client certificate (pg_hba `cert`): pglittle
// presents server_tls_cert_file; without it, the server's refusal reaches
// the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_a_client_certificate_gets_pglittles() {
    let certs = primary_with_hba().await;
    let pool = |with_cert: bool| {
        let mut cfg = config();
        let t = &mut cfg.pooler.server_tls;
        t.mode = TlsMode::VerifyFull;
        t.ca_file = Some(certs.path("ca.crt"));
        if with_cert {
            t.cert_file = Some(certs.path("tls_cert.crt"));
            t.key_file = Some(certs.path("tls_cert.key"));
        }
        cfg.pooler.query_wait_timeout = std::time::Duration::from_secs(3);
        // Clients log in to pglittle with a password; pglittle to the
        // server with its certificate only.
        cfg.users.insert(
            "tls_cert".into(),
            crate::common::user("front-pw", pglittle::config::AuthMethod::Md5),
        );
        pooler(cfg)
    };
    let p = pool(true).await;
    let c = p.connect_as("tls_cert", "front-pw").await.expect("login");
    assert_eq!(scalar(&c, "select current_user").await, "tls_cert");
    assert_eq!(server_side_ssl(&c).await, "t");
    let p = pool(false).await;
    let e = server_refusal(
        &p,
        "tls_cert",
        "front-pw",
        "logged in without a certificate",
    )
    .await;
    let said = message(&e);
    assert!(said.contains("certificate"), "{e:?}");
}
