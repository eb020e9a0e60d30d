//! The replica connection that carries the binlog dump: binsync's own client of the MySQL
//! protocol (handshake, authentication, text commands), on mysql_common's packet types.
//!
//! Why not the driver's binlog stream: it reads every packet into a framing buffer that grows
//! to the largest 16 MiB wire chunk and is never shrunk, copies the packet into a pooled
//! buffer, then copies it again into the event; it refuses an event larger than its packet
//! limit (the server's `max_allowed_packet`, while the dump thread sends events up to 1 GiB);
//! and its only liveness signal is a whole event. Here:
//! - an event's packet is read straight into a buffer of its own size, learnt from the event
//!   header at the head of the first chunk (checked against [`MAX_EVENT`]) before anything
//!   is allocated for it, so a big event costs its own size once on the way in;
//! - silence is counted in bytes: any bytes received within the `silence` window (a
//!   heartbeat when idle, the next piece of a big event in transit) keep the stream alive.
//!
//! Queries, lookups and everything else still go through the driver's `Conn`; this client only
//! knows what a dump connection needs (SET statements, COM_REGISTER_SLAVE, the dump command).
//!
//! TLS (`--ssl-mode`, see `source::tls`): after the server's handshake packet, if TLS is wanted
//! and the server offers it (CLIENT_SSL), the client sends the SSL request (the handshake
//! response cut after its fixed part), runs the TLS handshake on the socket, and goes on with
//! authentication inside TLS; there caching_sha2_password's full authentication sends the
//! password itself, as the mysql client does, instead of encrypting it with the server's RSA
//! key. The read path is the same [`BufReader`] over either stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, ErrPacket, HandshakePacket};
use mysql_common::packets::{HandshakeResponse, SslRequest};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TlsError;
use super::{Disconnect, Failure, Result, SourceConfig, SourceError};

/// The largest event a server sends (the dump thread's limit, `max_allowed_packet`'s ceiling).
pub const MAX_EVENT: usize = 1 << 30;
/// How long a TCP connection to the source may take to open: a server on the network
/// answers in milliseconds.
pub const TCP_CONNECT: Duration = Duration::from_secs(5);
/// Bytes of one wire chunk at most: a longer packet continues in the next chunk.
const MAX_CHUNK: usize = 0xFF_FFFF;

/// The socket, in clear or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the socket is handed to the TLS handshake.
    Detached,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

/// How far [`Wire::open`] goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Authenticated: a connection to use.
    Authenticated,
    /// Through the TLS handshake (certificate checked), then closed.
    Tls,
}

/// A connected, authenticated connection; see the module docs.
pub struct Wire {
    stream: BufReader<Stream>,
    /// Sequence id of the next packet written.
    seq: u8,
    caps: CapabilityFlags,
    src: SourceConfig,
}

/// How a packet starts once it is read.
pub enum Packet {
    /// A dump packet: the event bytes follow the 0x00 status byte.
    Event(Vec<u8>),
    /// End of the stream (the server closed the dump, e.g. a non-blocking dump at the end).
    End,
}

impl Wire {
    /// Connects and authenticates as `src`'s user, within `timeout`.
    pub async fn connect(src: &SourceConfig, timeout: Duration) -> Result<Wire> {
        Wire::open(src, timeout, Until::Authenticated).await
    }

    /// Connects and runs the TLS handshake only, checking the server's certificate as
    /// `--ssl-mode` says (and so learning its names for the driver, see `source::tls`).
    pub async fn probe_tls(src: &SourceConfig, timeout: Duration) -> Result<()> {
        Wire::open(src, timeout, Until::Tls).await.map(drop)
    }

    async fn open(src: &SourceConfig, timeout: Duration, until: Until) -> Result<Wire> {
        let addr = format!("{}:{}", src.host, src.port);
        let unreachable = |detail: String| -> Failure {
            Disconnect::Unreachable {
                addr: src.to_string(),
                detail,
            }
            .into()
        };
        let attempt = async {
            // A refused connection fails at once (and is named so: a failover moves on at
            // once); a host that does not answer (a wrong address, a firewall dropping
            // packets) within TCP_CONNECT, not a whole attempt.
            let tcp = match tokio::time::timeout(TCP_CONNECT, TcpStream::connect(&addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(Disconnect::Refused {
                        addr: src.to_string(),
                        detail: e.to_string(),
                    }
                    .into())
                }
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => {
                    return Err(unreachable(format!(
                        "no TCP connection within {}",
                        crate::units::duration(TCP_CONNECT)
                    )))
                }
            };
            let _ = tcp.set_nodelay(true);
            let mut wire = Wire {
                stream: BufReader::with_capacity(64 << 10, Stream::Plain(tcp)),
                seq: 0,
                caps: CapabilityFlags::empty(),
                src: src.clone(),
            };
            wire.handshake(src, until).await?;
            Ok(wire)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!(
                "no answer within {}",
                crate::units::duration(timeout)
            ))),
        }
    }

    async fn handshake(&mut self, src: &SourceConfig, until: Until) -> Result<()> {
        let first = self.read_small().await?;
        if first.first() == Some(&0xFF) {
            return Err(self.server_error(&first));
        }
        let hs: HandshakePacket<'_> = ParseBuf(&first)
            .parse(())
            .map_err(|e| self.protocol(format!("handshake: {e}")))?;
        let mut nonce = hs.scramble_1_ref().to_vec();
        nonce.extend_from_slice(hs.scramble_2_ref().unwrap_or_default());
        nonce.resize(20, 0);
        let wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS;
        self.caps = hs.capabilities() & wanted;
        if !self.caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(SourceError::Unsupported(format!(
                "{} speaks a protocol older than 4.1",
                self.src
            ))
            .into());
        }
        let version = hs
            .maria_db_server_version_parsed()
            .or_else(|| hs.server_version_parsed())
            .unwrap_or((0, 0, 0));
        let mut plugin = match hs.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        };
        let mode = src.tls.mode();
        let offered = hs.capabilities().contains(CapabilityFlags::CLIENT_SSL);
        src.tls.set_offered(offered);
        match src.tls.client_config() {
            Some(config) if offered => {
                self.caps |= CapabilityFlags::CLIENT_SSL;
                self.start_tls(config, version).await?;
            }
            _ if mode.requires_tls() => {
                return Err(TlsError::NotOffered {
                    addr: self.src.to_string(),
                    mode,
                }
                .into())
            }
            _ => {}
        }
        if until == Until::Tls {
            return Ok(());
        }
        let tls = self.caps.contains(CapabilityFlags::CLIENT_SSL);
        let pass = src.password.as_deref();
        let data = plugin.gen_data(pass, &nonce);
        let response = HandshakeResponse::new(
            data.as_deref(),
            version,
            Some(src.user.as_bytes()),
            None::<&[u8]>,
            Some(plugin.clone()),
            self.caps,
            None,
            MAX_EVENT as u32,
        );
        let mut buf = Vec::new();
        response.serialize(&mut buf);
        // The sequence goes on from the handshake (and the SSL request).
        self.write_packet(&buf).await?;
        let mut switched = false;
        loop {
            let p = self.read_small().await?;
            match p.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(self.server_error(&p)),
                Some(0xFE) if !switched => {
                    switched = true;
                    let req: AuthSwitchRequest<'_> = ParseBuf(&p)
                        .parse(())
                        .map_err(|e| self.protocol(format!("auth switch: {e}")))?;
                    nonce = req.plugin_data().to_vec();
                    plugin = match req.auth_plugin() {
                        AuthPlugin::CachingSha2Password => AuthPlugin::CachingSha2Password,
                        AuthPlugin::MysqlNativePassword => AuthPlugin::MysqlNativePassword,
                        other => {
                            return Err(SourceError::Unsupported(format!(
                                "{} asks for the authentication plugin {}; binsync supports mysql_native_password and caching_sha2_password: give the replication user one of them",
                                self.src,
                                String::from_utf8_lossy(other.as_bytes())
                            ))
                            .into())
                        }
                    };
                    let data = plugin.gen_data(pass, &nonce);
                    let mut buf = Vec::new();
                    if let Some(d) = data {
                        d.serialize(&mut buf);
                    }
                    self.write_packet(&buf).await?;
                }
                // caching_sha2_password: "fast auth worked", then the OK follows.
                Some(0x01) if p.get(1) == Some(&0x03) => {}
                // caching_sha2_password: the server wants the password itself.
                // Inside TLS the password itself, as the mysql client sends it.
                Some(0x01) if p.get(1) == Some(&0x04) && tls => {
                    let mut clear = pass.unwrap_or_default().as_bytes().to_vec();
                    clear.push(0);
                    self.write_packet(&clear).await?;
                }
                Some(0x01) if p.get(1) == Some(&0x04) => {
                    self.full_auth(pass.unwrap_or_default(), &nonce).await?;
                }
                _ => {
                    return Err(self.protocol(format!(
                        "unexpected packet during authentication (first byte {:?})",
                        p.first()
                    )))
                }
            }
        }
    }

    /// Sends the SSL request and runs the TLS handshake on the socket; the connection goes on
    /// inside TLS.
    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        version: (u16, u16, u16),
    ) -> Result<()> {
        let collation = if version >= (5, 5, 3) {
            mysql_common::collations::CollationId::UTF8MB4_GENERAL_CI
        } else {
            mysql_common::collations::CollationId::UTF8MB3_GENERAL_CI
        };
        let request = SslRequest::new(self.caps, MAX_EVENT as u32, collation as u8);
        let mut buf = Vec::new();
        request.serialize(&mut buf);
        self.write_packet(&buf).await?;
        if !self.stream.buffer().is_empty() {
            return Err(self.protocol("bytes from the server before the TLS handshake".into()));
        }
        let Stream::Plain(tcp) = std::mem::replace(self.stream.get_mut(), Stream::Detached) else {
            return Err(self.protocol("a second TLS handshake".into()));
        };
        let name = rustls::pki_types::ServerName::try_from(self.src.host.clone()).map_err(|e| {
            TlsError::Settings(format!(
                "--source host `{}` cannot be checked against a certificate: {e}",
                self.src.host
            ))
        })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| match super::error::rustls_error(&e) {
                Some(r) => self
                    .src
                    .tls
                    .handshake_error(&self.src.to_string(), &self.src.host, r)
                    .into(),
                None => self.io(e),
            })?;
        let (_, session) = tls.get_ref();
        tracing::debug!(
            source = %self.src,
            version = ?session.protocol_version(),
            cipher = ?session.negotiated_cipher_suite().map(|c| c.suite()),
            "dump connection: TLS"
        );
        *self.stream.get_mut() = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// caching_sha2_password's full authentication over plain TCP: the password, XORed with
    /// the nonce, encrypted with the server's RSA public key (RSA-OAEP).
    async fn full_auth(&mut self, pass: &str, nonce: &[u8]) -> Result<()> {
        self.write_packet(&[0x02]).await?;
        let p = self.read_small().await?;
        if p.first() == Some(&0xFF) {
            return Err(self.server_error(&p));
        }
        let pem = p.get(1..).unwrap_or_default();
        if !looks_like_public_key(pem) {
            return Err(SourceError::Unsupported(format!(
                "{} sent no usable RSA public key for caching_sha2_password's full authentication (its RSA keys are missing?); give the server RSA keys (caching_sha2_password_auto_generate_rsa_keys), or connect once with the mysql client over TLS so that the password is cached",
                self.src
            ))
            .into());
        }
        let mut secret = pass.as_bytes().to_vec();
        secret.push(0);
        for (i, b) in secret.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len().max(1)];
        }
        // mysql_common panics on a key it cannot parse: keep that out of the process.
        let pem = pem.to_vec();
        let encrypted = std::panic::catch_unwind(move || {
            mysql_common::crypto::encrypt(&secret, &pem)
        })
        .map_err(|_| {
            Failure::from(SourceError::Unsupported(format!(
                "{} sent an RSA public key binsync cannot read; check the server's caching_sha2_password_public_key_path",
                self.src
            )))
        })?;
        self.write_packet(&encrypted).await
    }

    /// Runs a statement that returns no rows to keep (SET ...). Rows, if any, are drained.
    /// Ends the session politely (COM_QUIT), so that the server does not log an aborted
    /// connection.
    pub async fn quit(mut self) {
        let _ = self.command(&[0x01]).await;
    }

    pub async fn query(&mut self, sql: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(sql.len() + 1);
        buf.push(0x03);
        buf.extend_from_slice(sql.as_bytes());
        self.command(&buf).await?;
        let p = self.read_small().await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(self.server_error(&p)),
            _ => {
                // A result set: column definitions up to an EOF, then rows up to an EOF.
                let mut eofs = 0;
                while eofs < 2 {
                    let p = self.read_small().await?;
                    match p.first() {
                        Some(0xFE) if p.len() < 9 => eofs += 1,
                        Some(0xFF) => return Err(self.server_error(&p)),
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends a command packet (the command byte first), starting a new sequence.
    pub async fn command(&mut self, payload: &[u8]) -> Result<()> {
        self.seq = 0;
        self.write_packet(payload).await
    }

    /// Sends a command serialised by mysql_common (COM_REGISTER_SLAVE, COM_BINLOG_DUMP...).
    pub async fn command_struct(&mut self, cmd: &impl MySerialize) -> Result<()> {
        let mut buf = Vec::new();
        cmd.serialize(&mut buf);
        self.command(&buf).await
    }

    /// Reads the OK (or the error) that answers a command.
    pub async fn read_ok(&mut self) -> Result<()> {
        let p = self.read_small().await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(self.server_error(&p)),
            _ => Err(self.protocol("expected an OK packet".into())),
        }
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<()> {
        // Our packets are small (commands, auth data): one chunk each.
        debug_assert!(payload.len() < MAX_CHUNK);
        let len = payload.len() as u32;
        let mut buf = Vec::with_capacity(payload.len() + 4);
        buf.extend_from_slice(&len.to_le_bytes()[..3]);
        buf.push(self.seq);
        buf.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        let s = self.stream.get_mut();
        let written = match s.write_all(&buf).await {
            Ok(()) => s.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| self.io(e))
    }

    /// A packet of the handshake or a command's answer (small: bounded by 16 MiB).
    async fn read_small(&mut self) -> Result<Vec<u8>> {
        let (len, seq) = self.read_header(None).await?;
        self.seq = seq.wrapping_add(1);
        let mut p = vec![0; len];
        self.stream
            .read_exact(&mut p)
            .await
            .map_err(|e| self.io(e))?;
        Ok(p)
    }

    /// The next packet of a dump, waiting at most `silence` for each read of bytes.
    ///
    /// An event packet's buffer is allocated once, at the event's own size (from the header
    /// at the head of its first chunk), checked against [`MAX_EVENT`].
    pub async fn read_dump_packet(&mut self, silence: Duration) -> Result<Packet> {
        let (len, _) = self.read_header(Some(silence)).await?;
        if len == 0 {
            return Err(self.protocol("an empty packet in the binlog stream".into()));
        }
        let mut head = [0u8; 1 + crate::decode::frame::HEADER_LEN];
        let first = len.min(head.len());
        self.read_exact_within(&mut head[..first], silence).await?;
        match head[0] {
            0x00 => {}
            0xFF => {
                let mut p = head[..first].to_vec();
                p.resize(len, 0);
                self.read_exact_within(&mut p[first..], silence).await?;
                return Err(self.server_error(&p));
            }
            0xFE if len < 9 => {
                let mut rest = vec![0; len - first];
                self.read_exact_within(&mut rest, silence).await?;
                return Ok(Packet::End);
            }
            other => {
                return Err(self.protocol(format!(
                    "a binlog stream packet starting with byte {other:#04x}"
                )))
            }
        }
        if first < head.len() {
            return Err(self.protocol(format!(
                "a binlog stream packet of {len} bytes, shorter than an event header"
            )));
        }
        let size = u32::from_le_bytes([head[10], head[11], head[12], head[13]]) as usize;
        if !(crate::decode::frame::HEADER_LEN..=MAX_EVENT).contains(&size) {
            return Err(self.protocol(format!("an event header that claims {size} bytes")));
        }
        // The event's own bytes (without the status byte), allocated once.
        let mut event = Vec::with_capacity(size);
        event.extend_from_slice(&head[1..]);
        let mut chunk_left = len - first;
        let mut chunk_len = len;
        loop {
            let want = chunk_left.min(size.saturating_sub(event.len()));
            if want < chunk_left {
                return Err(self.protocol(format!(
                    "an event packet longer than the {size} bytes its header claims"
                )));
            }
            let at = event.len();
            event.resize(at + want, 0);
            self.read_exact_within(&mut event[at..], silence).await?;
            if chunk_len < MAX_CHUNK {
                break;
            }
            // A full chunk: the packet goes on in the next one (possibly empty).
            let (next, _) = self.read_header(Some(silence)).await?;
            chunk_left = next;
            chunk_len = next;
        }
        if event.len() != size {
            return Err(self.protocol(format!(
                "an event of {} bytes where its header claims {size}",
                event.len()
            )));
        }
        Ok(Packet::Event(event))
    }

    /// A whole packet (one that fits in one chunk) is already in the read buffer.
    pub fn has_buffered_packet(&self) -> bool {
        let b = self.stream.buffer();
        b.len() >= 4 && {
            let len = u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize;
            len < MAX_CHUNK && b.len() >= 4 + len
        }
    }

    /// A wire chunk header: payload length and sequence id.
    async fn read_header(&mut self, silence: Option<Duration>) -> Result<(usize, u8)> {
        let mut h = [0u8; 4];
        match silence {
            Some(s) => self.read_exact_within(&mut h, s).await?,
            None => {
                self.stream
                    .read_exact(&mut h)
                    .await
                    .map_err(|e| self.io(e))?;
            }
        }
        Ok((u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize, h[3]))
    }

    /// Fills `buf`, failing with [`Disconnect::Silent`] only when no byte at all arrives for
    /// `silence` (so a big event in transit never counts as silence).
    async fn read_exact_within(&mut self, buf: &mut [u8], silence: Duration) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match tokio::time::timeout(silence, self.stream.read(&mut buf[done..])).await {
                Err(_) => return Err(Disconnect::Silent(silence).into()),
                Ok(Err(e)) => return Err(self.io(e)),
                Ok(Ok(0)) => return Err(Disconnect::StreamEnded.into()),
                Ok(Ok(n)) => done += n,
            }
        }
        Ok(())
    }

    fn server_error(&self, p: &[u8]) -> Failure {
        match ParseBuf(p).parse::<ErrPacket<'_>>(self.caps) {
            Ok(ErrPacket::Error(e)) => super::error::classify_server(
                e.error_code(),
                e.message_str().into_owned(),
                &self.src,
            ),
            _ => self.protocol("an error packet that does not parse".into()),
        }
    }

    fn io(&self, e: std::io::Error) -> Failure {
        Disconnect::Io(format!("{}: {e}", self.src)).into()
    }

    fn protocol(&self, what: String) -> Failure {
        Disconnect::Io(format!("{}: protocol error: {what}", self.src)).into()
    }
}

/// The PEM wrapping of a public key, and base64 inside it (mysql_common panics on anything
/// else).
fn looks_like_public_key(pem: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    let text = text.trim();
    let Some(body) = text
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|t| t.strip_suffix("-----END PUBLIC KEY-----"))
    else {
        return false;
    };
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    !b64.is_empty()
        && b64
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
}
