//! The cluster's certificate authority: creating it at `swarm init`, signing node and client
//! certificates from their requests (the key stays with its owner), and deriving the join
//! token secrets from the CA key so that managers need keep only their hashes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use essaim_api::tls::{self, CertRole};
use essaim_api::ControlError;
use essaim_core::model::{Cluster, Role, RootCa, TokenRecord};
use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::identity::new_secret;

/// How long the cluster CA itself is valid.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start a little in the past, so a peer whose clock runs behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

fn failure(what: &str) -> impl Fn(rcgen::Error) -> ControlError + '_ {
    move |e| ControlError::Internal(format!("{what}: {e}"))
}

fn time_at(at: SystemTime) -> Result<time::OffsetDateTime, ControlError> {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map_err(|e| ControlError::Internal(format!("bad certificate time: {e}")))
}

/// Creates a new CA for the cluster `cluster_id`.
///
/// # Errors
/// Key generation or signing failed, which would be a bug.
pub fn create_root(cluster_id: &str) -> Result<RootCa, ControlError> {
    let key = KeyPair::generate().map_err(failure("cannot generate the CA key"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "essaim root CA");
    name.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // The system's clock, not the manager's: TLS checks certificates against it.
    let now = SystemTime::now();
    params.not_before = time_at(now - CLOCK_SKEW)?;
    params.not_after = time_at(now + CA_VALIDITY)?;
    let cert = params
        .self_signed(&key)
        .map_err(failure("cannot sign the CA certificate"))?;
    Ok(RootCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh key and a certificate request for it, made by the node that will own the key.
///
/// # Errors
/// Key generation failed, which would be a bug.
pub fn new_key_and_request() -> Result<(String, String), ControlError> {
    tls::new_key_and_request().map_err(|e| ControlError::Internal(e.to_string()))
}

/// Signs a certificate request. Only the request's public key is used: the CA decides the
/// name, role, cluster and lifetime.
///
/// # Errors
/// A request that does not parse, or a CA that cannot sign.
pub fn sign(
    ca: &RootCa,
    request_pem: &str,
    subject: &str,
    role: CertRole,
    cluster_id: &str,
    validity: Duration,
) -> Result<String, ControlError> {
    let request = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| {
        ControlError::InvalidArgument(format!("malformed certificate request: {e}"))
    })?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(failure("cannot read the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(failure("cannot read the CA certificate"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, subject);
    name.push(DnType::OrganizationalUnitName, role.as_str());
    name.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::DnsName(
        role.dns_name()
            .try_into()
            .map_err(failure("bad role name"))?,
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = SystemTime::now();
    params.not_before = time_at(now - CLOCK_SKEW)?;
    params.not_after = time_at(now + validity)?;
    let cert = params
        .signed_by(&request.public_key, &issuer)
        .map_err(failure("cannot sign the certificate"))?;
    Ok(cert.pem())
}

/// Signs a request with the cluster's current CA, for the cluster's current certificate
/// lifetime. Returns the certificate and the CA certificates its holder must trust.
///
/// # Errors
/// As [`sign`].
pub fn issue(
    cluster: &Cluster,
    request_pem: &str,
    subject: &str,
    role: CertRole,
) -> Result<(String, String), ControlError> {
    let certificate = sign(
        &cluster.root_ca,
        request_pem,
        subject,
        role,
        &cluster.id,
        Duration::from_millis(cluster.config.cert_expiry_ms),
    )?;
    Ok((certificate, cluster.trusted_roots_pem()))
}

/// The digest of the CA that join tokens carry.
///
/// # Errors
/// The CA certificate does not parse.
pub fn token_digest(ca: &RootCa) -> Result<String, ControlError> {
    let certs = tls::certs_from_pem(&ca.cert_pem)
        .map_err(|e| ControlError::Internal(format!("bad CA certificate: {e}")))?;
    Ok(tls::token_digest(&certs[0]))
}

/// A new token record: a fresh nonce, and the hash of the secret it derives.
///
/// # Errors
/// As [`token_secret`].
pub fn new_token(ca: &RootCa, role: Role) -> Result<TokenRecord, ControlError> {
    let nonce = new_secret(16);
    let secret = token_secret(ca, role, &nonce)?;
    Ok(TokenRecord {
        nonce,
        secret_sha256: secret_hash(&secret),
    })
}

/// The full join token for `role`, derived again from the CA key and the record's nonce.
///
/// # Errors
/// The CA is unreadable.
pub fn join_token(ca: &RootCa, role: Role, record: &TokenRecord) -> Result<String, ControlError> {
    let secret = token_secret(ca, role, &record.nonce)?;
    Ok(format!("SWMTKN-1-{}-{}", token_digest(ca)?, secret))
}

fn token_secret(ca: &RootCa, role: Role, nonce: &str) -> Result<String, ControlError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(ca.key_pem.as_bytes())
        .map_err(|e| ControlError::Internal(format!("cannot key the token MAC: {e}")))?;
    mac.update(format!("essaim join token/{role}/{nonce}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    Ok(tls::base36(u128::from_be_bytes(first), 25)[..25].to_string())
}

pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use essaim_api::tls::{Credentials, PeerIdentity};

    use super::*;
    use crate::security::tokens::JoinToken;

    #[test]
    fn a_signed_certificate_carries_node_role_and_cluster() {
        let ca = create_root("cluster-1").expect("ca");
        let (key, request) = new_key_and_request().expect("csr");
        let cert = sign(
            &ca,
            &request,
            "node-1",
            CertRole::Worker,
            "cluster-1",
            Duration::from_secs(3600),
        )
        .expect("sign");
        let credentials = Credentials {
            cert_pem: cert,
            key_pem: key,
            roots_pem: ca.cert_pem.clone(),
        };
        let identity: PeerIdentity = credentials.identity().expect("identity");
        assert_eq!(identity.node_id, "node-1");
        assert_eq!(identity.role, CertRole::Worker);
        assert_eq!(identity.cluster_id, "cluster-1");
        // rustls accepts them for both sides of a connection.
        essaim_api::tls::server_config(&credentials).expect("server config");
        essaim_api::tls::client_config(&credentials).expect("client config");
    }

    #[test]
    fn tokens_derive_again_and_only_their_hash_is_kept() {
        let ca = create_root("c").expect("ca");
        let record = new_token(&ca, Role::Worker).expect("token");
        let token = join_token(&ca, Role::Worker, &record).expect("derive");
        let parsed = JoinToken::parse(&token).expect("well formed");
        assert_eq!(secret_hash(&parsed.secret), record.secret_sha256);
        assert_eq!(parsed.digest, token_digest(&ca).expect("digest"));
        assert!(!serde_json::to_string(&record)
            .expect("json")
            .contains(&parsed.secret));
        // The manager token of the same nonce is a different secret.
        let manager = join_token(&ca, Role::Manager, &record).expect("derive");
        assert_ne!(manager, token);
    }

    #[test]
    fn a_garbled_request_is_refused_as_invalid() {
        let ca = create_root("c").expect("ca");
        let err = sign(
            &ca,
            "not a csr",
            "n",
            CertRole::Worker,
            "c",
            Duration::from_secs(60),
        )
        .expect_err("garbled");
        assert!(matches!(err, ControlError::InvalidArgument(_)));
    }
}
