//! A lean HTTP/1.1 keep-alive client over TLS for load generation: one connection, requests written
//! as prepared bytes, answers read by `Content-Length`. A load generator shares the machine with the
//! server it measures; the less CPU it spends per request, the more the figures describe the server.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The longest answer head read, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The largest answer body read, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// A TLS configuration that trusts only the CA certificates in the PEM file `ca`.
pub(crate) fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).map_err(|error| format!("{}: {error}", ca.display()))? {
        let certificate = certificate.map_err(|error| format!("{}: {error}", ca.display()))?;
        roots.add(certificate).map_err(|error| format!("{}: {error}", ca.display()))?;
    }
    Ok(Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

/// `POST path` with a JSON `body` to `host`, as the bytes sent on the wire.
pub(crate) fn post_json(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection.
pub(crate) struct Connection {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection {
    /// Connects to `address` (`127.0.0.1:PORT`) and completes the TLS handshake for `name`.
    pub(crate) async fn open(address: &str, name: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let tcp = TcpStream::connect(address).await.map_err(|error| format!("connect {address}: {error}"))?;
        tcp.set_nodelay(true).map_err(|error| error.to_string())?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|error| error.to_string())?;
        let stream = TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|error| format!("TLS with {address}: {error}"))?;
        Ok(Self { stream, buffer: Vec::with_capacity(4096) })
    }

    /// Sends `request` (see [`post_json`]) and reads its answer: the status and the body.
    pub(crate) async fn send(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.stream.write_all(request).await.map_err(|error| format!("write: {error}"))?;
        self.stream.flush().await.map_err(|error| format!("flush: {error}"))?;
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(format!("an answer head longer than {MAX_HEAD} bytes"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(self.buffer.get(..head_end).unwrap_or_default())
            .map_err(|_| "an answer head that is not UTF-8")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("an odd status line: {:?}", head.lines().next().unwrap_or_default()))?;
        let length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .ok_or("an answer without Content-Length")?;
        if length > MAX_BODY {
            return Err(format!("an answer body of {length} bytes"));
        }
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buffer.get(head_end..head_end + length).unwrap_or_default().to_vec();
        self.buffer.drain(..head_end + length);
        Ok((status, body))
    }

    /// Reads more of the answer into the buffer.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await.map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("the server closed the connection".into());
        }
        self.buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        Ok(())
    }
}
