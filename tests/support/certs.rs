//! Certificates made at test time with rcgen: a test CA, leaf certificates it
//! signs (server and client), an expired leaf and a self-signed leaf. Nothing
//! is committed to the repository; write the PEM files into a tempdir when a
//! configuration needs paths.
//!
//! Every server certificate here is a leaf (`CA:FALSE`): webpki refuses a
//! CA certificate presented as an end entity.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use sha2::{Digest, Sha256};

/// A test certificate authority (`CA:TRUE`) that issues leaf certificates.
pub struct TestPki {
    /// The CA certificate, PEM. This is what a client's `ca_file` holds.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its private key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

/// Where [`Leaf::write_to`] put the files.
#[derive(Clone, Debug)]
pub struct LeafPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A fresh CA with its own key (ECDSA P-256).
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn("ferry test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2999, 1, 1);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestPki {
            ca_pem: cert.pem(),
            ca_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server leaf signed by this CA, valid now, for `names` (DNS names or
    /// IP addresses such as "localhost" and "127.0.0.1"), EKU serverAuth.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.issue(leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth))
    }

    /// A server leaf signed by this CA whose validity ended in 2001.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        let mut params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
        self.issue(params)
    }

    /// A server leaf signed by this CA that only becomes valid in 2990.
    pub fn not_yet_valid_leaf(&self, names: &[&str]) -> Leaf {
        let mut params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        params.not_before = date_time_ymd(2990, 1, 1);
        params.not_after = date_time_ymd(2999, 1, 1);
        self.issue(params)
    }

    /// A client certificate signed by this CA (EKU clientAuth), with `cn` as
    /// its subject common name.
    pub fn client_leaf(&self, cn: &str) -> Leaf {
        let mut params = leaf_params(&[], ExtendedKeyUsagePurpose::ClientAuth);
        params.distinguished_name = dn(cn);
        self.issue(params)
    }

    /// Writes `ca.pem` into `dir` and returns its path.
    pub fn write_ca_to(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::create_dir_all(dir).expect("create cert dir");
        std::fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// A self-signed leaf (not a CA) for `names`: what a partner's server shows
/// when it is trusted by fingerprint pinning rather than by a CA.
pub fn self_signed(names: &[&str]) -> Leaf {
    let params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.self_signed(&key).expect("self-sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
    }
}

impl Leaf {
    /// Writes `<stem>.crt.pem` and `<stem>.key.pem` into `dir` (created if
    /// missing); the key file is mode 0600.
    pub fn write_to(&self, dir: &Path, stem: &str) -> LeafPaths {
        std::fs::create_dir_all(dir).expect("create cert dir");
        let cert = dir.join(format!("{stem}.crt.pem"));
        let key = dir.join(format!("{stem}.key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
        }
        LeafPaths { cert, key }
    }

    /// SHA-256 of the DER certificate as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint(&self.cert_der)
    }
}

/// SHA-256 of `der` in uppercase hex pairs joined by colons (`AB:CD:...`),
/// the form `openssl x509 -fingerprint -sha256` prints.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "ferry tests");
    dn
}

fn leaf_params(names: &[&str], eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params.distinguished_name = dn(names
        .first()
        .map(String::as_str)
        .unwrap_or("ferry test leaf"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2999, 1, 1);
    params
}
