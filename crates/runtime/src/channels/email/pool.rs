//! Pooled SMTP connections for the email channel: `smtp://` (plain, or STARTTLS with
//! `?tls=required|opportunistic`) and `smtps://` (TLS from the first byte), all over sockets
//! with `TCP_NODELAY`.
//!
//! Why not lettre's own pool: lettre writes a message and its `\r\n.\r\n` terminator as two
//! writes on a socket without `TCP_NODELAY`, so Nagle's algorithm holds the terminator until
//! the body is acknowledged, and the server delays that ACK (≥ 40 ms on Linux) because it
//! answers only after the terminator: every message waited ~40–100 ms on its connection.
//! lettre's pool takes no connector, so the connections here are lettre's
//! `AsyncSmtpConnection` (greeting, EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA all by lettre)
//! over a `TcpStream` we open with `set_nodelay(true)`. For `smtps://`, lettre's TLS
//! wrapping takes no socket of ours, so the TLS session is made here (tokio-rustls, the
//! library lettre uses, with the same trust: public roots plus `email.ca_file`) and lettre
//! speaks SMTP inside it.

use std::sync::Mutex;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a whole transaction (MAIL, RCPT, DATA and the answer) on a connection:
/// a server that stops answering must not hold a send, and its dispatcher slot, forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a send failed: the server's answer (or a broken session), or no connection at all.
#[derive(Debug)]
pub enum PoolError {
    Smtp(Error),
    /// No session to send in (TCP, greeting, STARTTLS or AUTH failed), or no answer in
    /// time: nothing is known about the recipient.
    Connect(String),
}

impl From<Error> for PoolError {
    fn from(e: Error) -> Self {
        PoolError::Smtp(e)
    }
}

enum StartTls {
    No,
    IfOffered(TlsParameters),
    Required(TlsParameters),
    /// `smtps://`: TLS from the first byte.
    Wrapper(Implicit),
}

/// The TLS client for `smtps://` sessions.
struct Implicit {
    connector: tokio_rustls::TlsConnector,
    name: rustls_pki_types::ServerName<'static>,
}

impl Implicit {
    fn new(host: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let at = |e: &dyn std::fmt::Display| format!("email.ca_file {}: {e}", path.display());
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| at(&e))? {
                roots.add(cert.map_err(|e| at(&e))?).map_err(|e| at(&e))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("email.smtp_url: TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            name: rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("email.smtp_url: host {host:?}: {e}"))?,
        })
    }
}

/// A TLS session over our socket, as lettre takes a stream.
#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for TlsSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

pub struct SmtpPool {
    host: String,
    port: u16,
    starttls: StartTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// Connections kept idle at most (the mailer never has more sends at once).
    keep: usize,
}

impl SmtpPool {
    /// The pool for an `smtp://` or `smtps://` URL, read as lettre's `from_url` reads it:
    /// port 25 without `tls`, 587 with it, 465 for `smtps`.
    pub fn for_url(
        url: &str,
        ca_file: Option<&std::path::Path>,
        keep: usize,
    ) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("email.smtp_url: {e}"))?;
        let scheme = parsed.scheme().to_owned();
        if scheme != "smtp" && scheme != "smtps" {
            return Err(format!(
                "email.smtp_url: scheme {scheme}: expected smtp or smtps"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or("email.smtp_url: no host")?
            .to_owned();
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let params = || {
            let mut builder = TlsParameters::builder(host.clone());
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("email.ca_file {}: {e}", path.display()))?;
                let ca = Certificate::from_pem(&pem)
                    .map_err(|e| format!("email.ca_file {}: {e}", path.display()))?;
                builder = builder.add_root_certificate(ca);
            }
            builder
                .build_rustls()
                .map_err(|e| format!("email.smtp_url: TLS: {e}"))
        };
        let (starttls, default_port) = match (scheme.as_str(), tls.as_deref()) {
            ("smtps", _) => (StartTls::Wrapper(Implicit::new(&host, ca_file)?), 465),
            (_, None) => (StartTls::No, 25),
            (_, Some("required")) => (StartTls::Required(params()?), 587),
            (_, Some("opportunistic")) => (StartTls::IfOffered(params()?), 587),
            (_, Some(other)) => {
                return Err(format!(
                    "email.smtp_url: tls={other}: expected required or opportunistic"
                ));
            }
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|e| format!("email.smtp_url: credentials: {e}"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(Self {
            port: parsed.port().unwrap_or(default_port),
            host,
            starttls,
            credentials,
            hello,
            idle: Mutex::new(Vec::new()),
            keep,
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, PoolError> {
        let at = format!("{}:{}", self.host, self.port);
        // Failures before MAIL FROM (greeting, STARTTLS, AUTH) say nothing about the
        // recipient: a wrong password must not read as a hard bounce of every address.
        let session = |step: &str, e: Error| {
            PoolError::Connect(format!(
                "{step} with {at}: {}",
                crate::delivery::with_causes(&e)
            ))
        };
        let socket = self.socket(&at).await?;
        let stream: Box<dyn AsyncTokioStream> = match &self.starttls {
            StartTls::Wrapper(tls) => Box::new(TlsSocket(
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tls.connector.connect(tls.name.clone(), socket),
                )
                .await
                .map_err(|_| PoolError::Connect(format!("TLS handshake with {at} timed out")))?
                .map_err(|e| PoolError::Connect(format!("TLS handshake with {at}: {e}")))?,
            )),
            _ => Box::new(socket),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| session("greeting", e))?;
        let tls = match &self.starttls {
            StartTls::Required(p) => Some(p),
            StartTls::IfOffered(p) if conn.can_starttls() => Some(p),
            StartTls::No | StartTls::IfOffered(_) | StartTls::Wrapper(_) => None,
        };
        if let Some(p) = tls {
            conn.starttls(p.clone(), &self.hello)
                .await
                .map_err(|e| session("STARTTLS", e))?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| session("AUTH", e))?;
        }
        Ok(conn)
    }

    /// A socket to the server, with `TCP_NODELAY`.
    async fn socket(&self, at: &str) -> Result<tokio::net::TcpStream, PoolError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| PoolError::Connect(format!("connecting to {at} timed out")))?
        .map_err(|e| PoolError::Connect(format!("connecting to {at}: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| PoolError::Connect(format!("TCP_NODELAY on {at}: {e}")))?;
        Ok(tcp)
    }

    /// Sends on an idle connection, or a new one. A connection that fails is closed, not
    /// pooled; if a reused one fails without an SMTP answer (the server closed it while
    /// idle), the message is tried once more on a new connection.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, PoolError> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut result = Self::send_on(&mut conn, envelope, message).await;
        if let Err(PoolError::Smtp(e)) = &result
            && was_reused
            && !e.is_permanent()
            && !e.is_transient()
        {
            conn.abort().await;
            conn = self.connect().await?;
            result = Self::send_on(&mut conn, envelope, message).await;
        }
        match &result {
            Ok(_) if !conn.has_broken() => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < self.keep
                {
                    idle.push(conn);
                }
            }
            // A timed-out connection is mid-transaction: dropped without a QUIT.
            Err(PoolError::Connect(_)) => {}
            _ => conn.abort().await,
        }
        result
    }

    async fn send_on(
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Response, PoolError> {
        match tokio::time::timeout(SEND_TIMEOUT, conn.send(envelope, message)).await {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(PoolError::Connect(format!(
                "no answer within {} s",
                SEND_TIMEOUT.as_secs()
            ))),
        }
    }
}
