//! The proof that a deploy works: `select version()` through the proxy, as a client would run
//! it, and the connection strings to print.
//!
//! The proxy finds the endpoint from the TLS SNI (`<endpoint>.<domain>`) or from the startup
//! option `endpoint=<id>`; an SNI outside the domain is refused, so the check sends
//! `<endpoint>.<domain>` as SNI (as a client does once DNS points there) and the option too.
//! The certificate is not verified, as with psql's `sslmode=require`: a generated one is
//! self-signed.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect};

use crate::neon::Secret;

/// A proxy address, `host:port` (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl Address {
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| Some(Self { host: host.to_string(), port: port.parse().ok()? }))?
    }

    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// For a URL's authority.
    fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority())
    }
}

/// Who connects where: enough for the connection strings and the check.
#[derive(Debug, Clone)]
pub struct Connection {
    pub role: String,
    pub database: String,
    pub endpoint: String,
    pub domain: String,
    pub address: Address,
}

/// What stands for the password in printed connection strings unless it is asked for.
pub const PASSWORD_PLACEHOLDER: &str = "<password>";

impl Connection {
    /// The name clients connect to: `<endpoint>.<domain>`.
    pub fn host(&self) -> String {
        format!("{}.{}", self.endpoint, self.domain)
    }

    fn userinfo(&self, password: Option<&Secret>) -> String {
        let password = password.map(|p| escape(&p.0)).unwrap_or_else(|| PASSWORD_PLACEHOLDER.into());
        format!("{}:{password}", escape(&self.role))
    }

    /// `postgresql://role:password@<endpoint>.<domain>:port/db?sslmode=require`: once
    /// `*.<domain>` resolves to the proxy.
    pub fn url(&self, password: Option<&Secret>) -> String {
        format!("postgresql://{}@{}:{}/{}?sslmode=require", self.userinfo(password), self.host(), self.address.port, escape(&self.database))
    }

    /// The same through the proxy's own address, routed by the `endpoint` option. A host name
    /// would go out as TLS SNI, which the proxy refuses outside its domain: `sslsni=0`.
    pub fn url_without_dns(&self, password: Option<&Secret>) -> String {
        let sni = if self.address.is_ip() { "" } else { "&sslsni=0" };
        format!(
            "postgresql://{}@{}/{}?sslmode=require{sni}&options=endpoint%3D{}",
            self.userinfo(password),
            self.address.authority(),
            escape(&self.database),
            escape(&self.endpoint)
        )
    }

    /// Connects over TLS and runs `select version()`; the server's answer.
    pub async fn select_version(&self, password: &Secret, timeout: Duration) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let address = self.address.authority();
        let attempt = async {
            let stream = TcpStream::connect(&address).await.with_context(|| format!("connecting to {address}"))?;
            let server_name =
                ServerName::try_from(self.host()).with_context(|| format!("{} is not a valid TLS server name", self.host()))?;
            let mut config = tokio_postgres::Config::new();
            config
                .user(&self.role)
                .password(password.0.as_bytes())
                .dbname(&self.database)
                .options(format!("endpoint={}", self.endpoint))
                .ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config
                .connect_raw(stream, Tls { server_name })
                .await
                .with_context(|| format!("logging in as {} to database {} at {address}", self.role, self.database))?;
            let connection = tokio::spawn(connection);
            let row = client.query_one("select version()", &[]).await.context("running select version()")?;
            drop(client);
            let _ = connection.await;
            anyhow::Ok(row.try_get::<_, String>(0).context("reading the result of select version()")?)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {address} within {}s", timeout.as_secs()))?
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// TLS for tokio-postgres with rustls (ring), sending `server_name` as SNI.
struct Tls {
    server_name: ServerName<'static>,
}

impl TlsConnect<TcpStream> for Tls {
    type Stream = TlsStream;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, std::io::Result<TlsStream>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(self.server_name, stream).await?;
            Ok(TlsStream(stream))
        })
    }
}

struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // The client then offers SCRAM-SHA-256 without channel binding, which the proxy and
        // Postgres accept.
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `sslmode=require`: any certificate, but the handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(host: &str) -> Connection {
        Connection {
            role: "neondb_owner".into(),
            database: "neondb".into(),
            endpoint: "main".into(),
            domain: "neon.example.com".into(),
            address: Address { host: host.into(), port: 5432 },
        }
    }

    #[test]
    fn connection_strings_with_and_without_the_password() {
        let c = connection("a1b2.elb.us-east-1.amazonaws.com");
        assert_eq!(c.url(None), "postgresql://neondb_owner:<password>@main.neon.example.com:5432/neondb?sslmode=require");
        let password = Secret("p@ss/w:rd".into());
        assert_eq!(c.url(Some(&password)), "postgresql://neondb_owner:p%40ss%2Fw%3Ard@main.neon.example.com:5432/neondb?sslmode=require");
        assert_eq!(
            c.url_without_dns(None),
            "postgresql://neondb_owner:<password>@a1b2.elb.us-east-1.amazonaws.com:5432/neondb?sslmode=require&sslsni=0&options=endpoint%3Dmain"
        );
        assert_eq!(
            connection("127.0.0.1").url_without_dns(None),
            "postgresql://neondb_owner:<password>@127.0.0.1:5432/neondb?sslmode=require&options=endpoint%3Dmain"
        );
        assert_eq!(connection("::1").address.to_string(), "[::1]:5432");
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(Address::parse("127.0.0.1:6432"), Some(Address { host: "127.0.0.1".into(), port: 6432 }));
        assert_eq!(Address::parse("[::1]:5432"), Some(Address { host: "::1".into(), port: 5432 }));
        assert_eq!(Address::parse("lb.example.com:5432").unwrap().host, "lb.example.com");
        assert_eq!(Address::parse("nohost"), None);
        assert_eq!(Address::parse(":5432"), None);
        assert_eq!(Address::parse("h:notaport"), None);
    }
}
