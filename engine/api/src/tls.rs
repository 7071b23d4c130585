//! Mutual TLS on the cluster port, done with rustls directly rather than through tonic's TLS
//! features, for three reasons: a joining node must pin the cluster CA by the fingerprint in
//! its token before it trusts anything; credentials and trusted roots change at run time
//! (renewal, promotion, CA rotation); and handlers must see who is calling.
//!
//! A node's certificate names the node (common name = node ID), its role (organizational unit,
//! and a DNS name `essaim-manager`, `essaim-worker` or `essaim-client`) and its cluster
//! (organization). Every outgoing cluster connection goes to a manager and checks for the
//! `essaim-manager` name, so a worker's certificate cannot pose as a manager.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

/// The DNS name in every manager certificate; clients dial managers by it.
pub const MANAGER_NAME: &str = "essaim-manager";
pub const WORKER_NAME: &str = "essaim-worker";
pub const CLIENT_NAME: &str = "essaim-client";

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a certificate allows its holder to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    Manager,
    Worker,
    /// An operator's client bundle: the control API only.
    Client,
}

impl CertRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Manager => "manager",
            CertRole::Worker => "worker",
            CertRole::Client => "client",
        }
    }

    pub fn dns_name(self) -> &'static str {
        match self {
            CertRole::Manager => MANAGER_NAME,
            CertRole::Worker => WORKER_NAME,
            CertRole::Client => CLIENT_NAME,
        }
    }

    pub fn parse(text: &str) -> Option<CertRole> {
        match text {
            "manager" => Some(CertRole::Manager),
            "worker" => Some(CertRole::Worker),
            "client" => Some(CertRole::Client),
            _ => None,
        }
    }
}

/// Who is on the other end of a connection, read from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: CertRole,
    pub cluster_id: String,
    /// Seconds since the UNIX epoch after which the certificate is no longer valid.
    pub not_after: i64,
    /// Which of the roots trusted at handshake time signed it: a connection opened before a
    /// CA rotation is refused once that CA is no longer trusted.
    pub issuer_fingerprint: Option<String>,
}

impl PeerIdentity {
    /// Reads the identity a certificate carries.
    ///
    /// # Errors
    /// The certificate is not one of ours (no node ID, role or cluster in its subject).
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Certificate(format!("unreadable certificate: {e}")))?;
        let subject = cert.subject();
        let first = |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
            iter.next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_string)
        };
        let node_id = first(&mut subject.iter_common_name())
            .ok_or_else(|| TlsError::Certificate("certificate without a node ID".into()))?;
        let role = first(&mut subject.iter_organizational_unit())
            .and_then(|r| CertRole::parse(&r))
            .ok_or_else(|| TlsError::Certificate("certificate without an essaim role".into()))?;
        let cluster_id = first(&mut subject.iter_organization()).unwrap_or_default();
        Ok(PeerIdentity {
            node_id,
            role,
            cluster_id,
            not_after: cert.validity().not_after.timestamp(),
            issuer_fingerprint: None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// SHA-256 of a certificate's DER, in lowercase hex: how a CA is named in logs.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint of the root, among `roots`, whose key signed `leaf`.
pub fn issuer_among(leaf: &[u8], roots: &[CertificateDer<'_>]) -> Option<String> {
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).ok()?;
    roots.iter().find_map(|root| {
        let (_, ca) = x509_parser::parse_x509_certificate(root).ok()?;
        leaf.verify_signature(Some(ca.public_key()))
            .ok()
            .map(|()| fingerprint(root))
    })
}

/// A fingerprint of a set of CA certificates, whatever their order: how a node and the leader
/// compare trust stores during a CA rotation.
pub fn roots_fingerprint(roots_pem: &str) -> String {
    let mut each: Vec<String> = certs_from_pem(roots_pem)
        .map(|certs| certs.iter().map(|c| fingerprint(c)).collect())
        .unwrap_or_default();
    each.sort();
    hex::encode(Sha256::digest(each.join(",").as_bytes()))
}

/// SHA-256 of a CA certificate's DER, in the 50 base-36 characters join tokens carry.
pub fn token_digest(der: &[u8]) -> String {
    let hash = Sha256::digest(der);
    let mut high = [0u8; 16];
    let mut low = [0u8; 16];
    high.copy_from_slice(&hash[..16]);
    low.copy_from_slice(&hash[16..]);
    let text = format!(
        "{}{}",
        base36(u128::from_be_bytes(high), 25),
        base36(u128::from_be_bytes(low), 25)
    );
    text[..50].to_string()
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `value` in base 36, left-padded with zeros to `width`.
pub fn base36(mut value: u128, width: usize) -> String {
    let mut digits = Vec::new();
    while value > 0 {
        digits.push(BASE36[(value % 36) as usize]);
        value /= 36;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// The DER of every certificate in a PEM text.
///
/// # Errors
/// Text that holds no certificate.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// A fresh key and a certificate request for it, made by whoever will own the key (a node,
/// or an operator's shell): the key never leaves its owner, the CA sees only the request.
///
/// # Errors
/// Key generation failed, which would be a bug.
pub fn new_key_and_request() -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
    let request = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok((key.serialize_pem(), request))
}

/// A node's (or client's) credentials: its certificate and key, and the CA roots it trusts
/// (one, or two while the CA is being rotated).
#[derive(Clone)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub roots_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// The identity in the certificate.
    ///
    /// # Errors
    /// The certificate is unreadable or not one of ours.
    pub fn identity(&self) -> Result<PeerIdentity, TlsError> {
        let leaf = certs_from_pem(&self.cert_pem)?;
        PeerIdentity::from_der(&leaf[0])
    }

    /// The fingerprint of the CA that signed the certificate, among the trusted roots.
    pub fn issuer_fingerprint(&self) -> Option<String> {
        let leaf = certs_from_pem(&self.cert_pem).ok()?;
        issuer_among(&leaf[0], &certs_from_pem(&self.roots_pem).ok()?)
    }

    /// The fingerprint of the set of trusted roots, as [`roots_fingerprint`] computes it.
    pub fn roots_fingerprint(&self) -> String {
        roots_fingerprint(&self.roots_pem)
    }

    fn roots(&self) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), TlsError> {
        let certs = certs_from_pem(&self.roots_pem)?;
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store
                .add(cert.clone())
                .map_err(|e| TlsError::Certificate(format!("bad CA certificate: {e}")))?;
        }
        Ok((store, certs))
    }

    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let mut chain = certs_from_pem(&self.cert_pem)?;
        // Send the CA certificates too: a joining node pins the CA by fingerprint and needs
        // to see it, and during a CA rotation peers pick the root they know.
        chain.extend(self.roots()?.1);
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Certificate(format!("bad private key PEM: {e}")))?;
        Ok((chain, key))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The server side: presents our certificate, and verifies a client's certificate against our
/// roots when it shows one. Calls without a certificate are accepted by TLS (a joining node
/// has none yet) and refused by the handlers that need one.
///
/// # Errors
/// Credentials that rustls cannot use.
pub fn server_config(credentials: &Credentials) -> Result<ServerConfig, TlsError> {
    let (roots, _) = credentials.roots()?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(config_error)?;
    let (chain, key) = credentials.chain_and_key()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The client side: shows our certificate, and accepts only a server whose certificate comes
/// from one of our roots and names it a manager.
///
/// # Errors
/// Credentials that rustls cannot use.
pub fn client_config(credentials: &Credentials) -> Result<ClientConfig, TlsError> {
    let (roots, _) = credentials.roots()?;
    let (chain, key) = credentials.chain_and_key()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The client side for a node that is joining: it has no certificate and no CA yet, only the
/// CA's digest from its token ([`token_digest`]). The server must present a chain that
/// includes a CA certificate with that digest, and a manager certificate signed by it.
///
/// # Errors
/// rustls refuses the configuration.
pub fn pinned_client_config(ca_digest: &str) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            digest: ca_digest.to_string(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The message a joining node's verifier gives when the manager's CA is not the one its token
/// names: the marker lets the joiner tell an impostor from a network failure.
pub const WRONG_CA: &str = "the manager's CA does not match the fingerprint in the join token";

/// The message when the manager still trusts the token's CA but no longer signs with it: the
/// cluster rotated its CA after the token was printed.
pub const ROTATED_CA: &str = "the join token names a CA this cluster has rotated away from";

#[derive(Debug)]
struct PinnedCa {
    digest: String,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| token_digest(cert) == self.digest)
            .ok_or_else(|| rustls::Error::General(WRONG_CA.to_string()))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    rustls::Error::General(ROTATED_CA.to_string())
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A node's live TLS settings. Swapped whole when its certificate is renewed or its trusted
/// roots change; connections made afterwards use the new ones.
#[derive(Default)]
pub struct TlsState {
    current: RwLock<Option<Arc<Live>>>,
    generation: AtomicU64,
}

struct Live {
    credentials: Credentials,
    identity: PeerIdentity,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The trusted roots, parsed once.
    roots: Vec<CertificateDer<'static>>,
}

impl TlsState {
    /// Installs new credentials.
    ///
    /// # Errors
    /// Credentials that are unreadable or that rustls refuses; the old ones stay in place.
    pub fn install(&self, credentials: Credentials) -> Result<(), TlsError> {
        let live = Live {
            identity: credentials.identity()?,
            server: Arc::new(server_config(&credentials)?),
            client: Arc::new(client_config(&credentials)?),
            roots: certs_from_pem(&credentials.roots_pem)?,
            credentials,
        };
        *self.current.write() = Some(Arc::new(live));
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Forgets the credentials, as `swarm leave` does.
    pub fn clear(&self) {
        *self.current.write() = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn live(&self) -> Option<Arc<Live>> {
        self.current.read().clone()
    }

    /// Bumped by every change, so holders of connections can tell theirs are stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn identity(&self) -> Option<PeerIdentity> {
        self.live().map(|l| l.identity.clone())
    }

    /// True when `fingerprint` names one of the CAs this node trusts now.
    pub fn trusts(&self, fingerprint: &str) -> bool {
        self.live().is_some_and(|l| {
            l.roots
                .iter()
                .any(|root| self::fingerprint(root) == fingerprint)
        })
    }

    /// Which trusted root signed a certificate presented to us.
    fn issuer_of(&self, leaf: &[u8]) -> Option<String> {
        self.live().and_then(|l| issuer_among(leaf, &l.roots))
    }

    pub fn credentials(&self) -> Option<Credentials> {
        self.live().map(|l| l.credentials.clone())
    }

    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.live().map(|l| l.server.clone())
    }

    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.live().map(|l| l.client.clone())
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// `None` when the peer showed no certificate (a joining node).
    pub identity: Option<PeerIdentity>,
}

/// An accepted, authenticated cluster connection.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TLS connections on the cluster port. Handshakes run concurrently, each with a
/// deadline; a refused one is logged with the reason (plaintext, unknown CA, expired).
pub fn accept(
    listener: TcpListener,
    tls: Arc<TlsState>,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("cluster port accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls.server_config() else {
                tracing::warn!(peer = %remote_addr, "connection refused: this node has no certificate yet (it is in no swarm)");
                continue;
            };
            let sender = sender.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %remote_addr, "connection refused: {}", refusal_reason(&e));
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %remote_addr, "connection refused: TLS handshake timed out");
                        return;
                    }
                };
                let identity = stream.get_ref().1.peer_certificates().and_then(|chain| {
                    let leaf = chain.first()?;
                    let mut identity = PeerIdentity::from_der(leaf).ok()?;
                    identity.issuer_fingerprint = tls.issuer_of(leaf);
                    Some(identity)
                });
                let peer = PeerInfo {
                    remote_addr,
                    identity,
                };
                let _ = sender.send(Ok(TlsConnection { stream, peer })).await;
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Why a handshake failed, in words for the refusing side's log.
pub fn refusal_reason(error: &io::Error) -> String {
    use rustls::{CertificateError, InvalidMessage};
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return format!("handshake failed: {error}");
    };
    match tls {
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)
        | rustls::Error::InvalidMessage(_) => {
            "plaintext or non-TLS client (the cluster port speaks only mutual TLS)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "certificate from another CA (not this cluster's)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired)
        | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "expired certificate".into()
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA) => {
            "the client does not trust this node's CA (it belongs to another cluster, or its CA \
             was rotated)"
                .into()
        }
        other => format!("TLS error: {other}"),
    }
}

/// How long a new connection waits for the manager's first bytes (HTTP/2 sends its settings at
/// once), which is when a refusal of our certificate shows.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(1);

/// A TLS client connection to a manager's cluster port.
///
/// In TLS 1.3 the server checks the client's certificate after the client has finished its
/// side of the handshake, so a refusal arrives with the server's first bytes. Reading them
/// here, and replaying them to the caller, turns a refused certificate into an error that says
/// why at connection time, instead of a cancelled request later.
///
/// # Errors
/// The TCP connection or the handshake failed, or the server refused our certificate.
pub async fn connect(
    addr: &str,
    config: Arc<ClientConfig>,
    role: CertRole,
) -> io::Result<ClientConnection> {
    use tokio::io::AsyncReadExt;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(role.dns_name())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut first = vec![0u8; 16 * 1024];
    let read = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.read(&mut first)).await {
        Ok(Ok(0)) => {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the manager closed the connection after the TLS handshake",
            ))
        }
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return Err(e),
        Err(_) => 0,
    };
    first.truncate(read);
    Ok(ClientConnection {
        first,
        replayed: 0,
        stream,
    })
}

/// A client connection whose first bytes were read early (see [`connect`]) and are handed
/// out again before anything else.
pub struct ClientConnection {
    first: Vec<u8>,
    replayed: usize,
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < self.first.len() {
            let rest = &self.first[self.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
