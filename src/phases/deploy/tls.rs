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

/// The subject CN of the first certificate in `pem`, read from its DER (neon reads the same
/// field); `None` when it is not a certificate or has no CN.
pub fn subject_common_name(pem: &str) -> Option<String> {
    use base64::Engine as _;
    let begin = pem.find("-----BEGIN CERTIFICATE-----")?;
    let body = &pem[begin..].lines().skip(1).take_while(|l| !l.starts_with("-----END")).collect::<String>();
    let der = base64::engine::general_purpose::STANDARD.decode(body.trim()).ok()?;
    let (_, certificate, _) = der_element(&der)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    // TBSCertificate: [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xA0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der_element(tbs)?.2;
    }
    let (_, mut subject, _) = der_element(tbs)?;
    // Name: SEQUENCE OF SET OF SEQUENCE { type OID, value string }.
    while !subject.is_empty() {
        let (_, mut set, rest) = der_element(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der_element(set)?;
            set = rest;
            let (tag, oid, value) = der_element(attribute)?;
            const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
            if tag == 0x06 && oid == COMMON_NAME {
                let (_, text, _) = der_element(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        (rest[..count].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)), &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
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
    fn the_subject_common_name_is_read_from_the_certificate() {
        let (cert, _) = self_signed("neon.example.com").unwrap();
        assert_eq!(subject_common_name(&cert.0).as_deref(), Some("*.neon.example.com"));
        // Another CN, with a SAN of the wildcard: the CN is what counts.
        let mut params = rcgen::CertificateParams::new(vec!["*.neon.example.com".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CountryName, "DE");
        params.distinguished_name.push(rcgen::DnType::CommonName, "proxy.neon.example.com");
        let other = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
        assert_eq!(subject_common_name(&other).as_deref(), Some("proxy.neon.example.com"));
        let mut no_cn = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        no_cn.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(subject_common_name(&no_cn.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()), None);
        assert_eq!(subject_common_name("-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n"), None);
        assert_eq!(subject_common_name("no pem"), None);
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
