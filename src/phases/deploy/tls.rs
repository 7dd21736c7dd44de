//! The proxy's certificate: the user's files, or a self-signed one. The proxy derives the
//! domain it routes by (`<endpoint>.<domain>`) from the certificate's subject CN, so the CN
//! itself must be the wildcard `*.<domain>` (neon-components.md §2.7); it is a SAN too.

use std::path::Path;

use crate::neon::Secret;

use super::secrets::UserTls;

/// Years a generated certificate is valid; clients with sslmode=require do not check it.
const VALID_YEARS: i64 = 10;

/// A self-signed certificate (ECDSA P-256) for `*.<domain>` and `<domain>`: (cert, key) PEM.
pub fn self_signed(domain: &str) -> Result<(Secret, Secret), rcgen::Error> {
    let wildcard = format!("*.{domain}");
    let mut params = rcgen::CertificateParams::new(vec![wildcard.clone(), domain.to_string()])?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, wildcard);
    name.push(rcgen::DnType::OrganizationName, "neonctl-aws");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * VALID_YEARS);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((Secret(cert.pem()), Secret(key.serialize_pem())))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("reading the proxy TLS {what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error(
        "the proxy TLS {what} {path} is not PEM (no `-----BEGIN {label}` line); give the PEM files, e.g. cert-manager's tls.crt and tls.key"
    )]
    NotPem { what: &'static str, path: String, label: &'static str },
}

/// Reads the user's certificate and key (PEM). Their contents never appear in errors.
pub fn read_user_files(cert: &Path, key: &Path) -> Result<UserTls, TlsFileError> {
    // `needle` is in every PEM of its kind: keys are `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`.
    let read = |path: &Path, what: &'static str, label: &'static str, needle: &str| {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TlsFileError::Read { what, path: shown.clone(), source })?;
        if !text.contains(needle) {
            return Err(TlsFileError::NotPem { what, path: shown, label });
        }
        Ok(Secret(text))
    };
    Ok(UserTls {
        cert: read(cert, "certificate", "CERTIFICATE", "-----BEGIN CERTIFICATE-----")?,
        key: read(key, "key", "PRIVATE KEY", "PRIVATE KEY-----")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_name_the_wildcard_and_read_back_with_rustls() {
        let (cert, key) = self_signed("neon.example.com").unwrap();
        assert!(cert.0.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.0.contains("PRIVATE KEY-----"));
        // The DER holds the CN and SAN as UTF8/IA5 strings.
        use base64::Engine as _;
        let body: String = cert.0.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let needle = b"*.neon.example.com";
        assert!(der.windows(needle.len()).filter(|w| w == needle).count() >= 2, "CN and SAN");
    }

    #[test]
    fn user_files_must_be_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("d.example").unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, &cert.0).unwrap();
        std::fs::write(&key_path, &key.0).unwrap();
        let tls = read_user_files(&cert_path, &key_path).unwrap();
        assert_eq!(tls.cert, cert);
        std::fs::write(&key_path, "hello").unwrap();
        let err = read_user_files(&cert_path, &key_path).unwrap_err().to_string();
        assert!(err.contains("key") && err.contains("not PEM") && !err.contains("hello"), "{err}");
        let err = read_user_files(&dir.path().join("missing"), &cert_path).unwrap_err().to_string();
        assert!(err.contains("reading the proxy TLS"), "{err}");
    }
}
