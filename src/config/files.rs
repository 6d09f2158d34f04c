//! Files the configuration names (CA bundles, client certificates and keys,
//! password files): read with a size bound, so `/dev/zero` or a mistyped
//! path to a disk image is a clear error, not an exhausted memory; and
//! PEM contents checked the same way at `check` time and at connect time.

use std::io::Read;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The most a CA bundle, certificate or key file may hold.
pub const MAX_PEM_BYTES: u64 = 1 << 20;
/// The most a password file may hold.
pub const MAX_PASSWORD_BYTES: u64 = 64 << 10;

/// Reads at most `max` bytes of `path`; a larger file is an error.
pub fn read_bounded(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read {what} '{}': {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {what} '{}': {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!(
            "{what} '{}' is larger than {} KiB; expected a small {} file",
            path.display(),
            max >> 10,
            if what.contains("password") {
                "password"
            } else {
                "PEM"
            }
        ));
    }
    Ok(buf)
}

/// Every certificate in a PEM bundle; none, or anything unreadable, is an error.
pub fn certificates(
    bytes: &[u8],
    what: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} '{}' is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        let hint = if bytes.first() == Some(&0x30) {
            " (it looks like DER: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`)"
        } else if String::from_utf8_lossy(bytes).contains("PRIVATE KEY") {
            " (it holds a private key, not a certificate)"
        } else {
            ""
        };
        return Err(format!(
            "{what} '{}' holds no PEM certificate{hint}",
            path.display()
        ));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref()).map_err(|e| {
            format!(
                "{what} '{}' holds a certificate that cannot be read: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// The one private key of a PEM file.
pub fn private_key(
    bytes: &[u8],
    what: &str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| format!("{what} '{}' is not valid PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{what} '{}' holds no PEM private key", path.display()))
}

/// Checks that `key` belongs to the first certificate of `chain`.
pub fn key_matches(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    key_path: &Path,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "client_key '{}' does not belong to client_cert: {e}",
                key_path.display()
            )
        })
}
