//! The proxy's certificate: the user's files, or a self-signed one. Neon's proxy derives the
//! domain it routes by (`<endpoint>.<domain>`) from the certificate's subject, and only from it:
//! `proxy/src/tls/server_config.rs` takes the subject's RFC 4514 string and strips `CN=*.`, so
//! the subject must be exactly `CN=*.<domain>`, nothing else (an `O=…` beside it makes the proxy
//! refuse to start, or route by `<domain>,O=…`). The wildcard is a SAN too, for clients that
//! verify.

use std::path::Path;

use x509_parser::prelude::{FromDer as _, X509Certificate, X509Name};

use crate::neon::Secret;

use super::secrets::UserTls;

/// Years a generated certificate is valid; clients with sslmode=require do not check it.
const VALID_YEARS: i64 = 10;

/// A self-signed certificate (ECDSA P-256) for `*.<domain>` and `<domain>`, subject exactly
/// `CN=*.<domain>`: (cert, key) PEM.
pub fn self_signed(domain: &str) -> Result<(Secret, Secret), rcgen::Error> {
    let wildcard = format!("*.{domain}");
    let mut params = rcgen::CertificateParams::new(vec![wildcard.clone(), domain.to_string()])?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, wildcard);
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * VALID_YEARS);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((Secret(cert.pem()), Secret(key.serialize_pem())))
}

/// Why a certificate cannot serve the proxy for a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("it is not a PEM X.509 certificate ({0})")]
    NotACertificate(String),
    #[error("its subject is `{found}`")]
    Subject { found: String },
}

/// The subject the proxy needs for `domain`.
pub fn required_subject(domain: &str) -> String {
    format!("CN=*.{domain}")
}

/// Checks the first certificate in `pem` the way neon's proxy reads it: its subject, as an
/// RFC 4514 string, must be exactly [`required_subject`].
pub fn check_proxy_subject(pem: &str, domain: &str) -> Result<(), SubjectError> {
    let found = subject(pem)?;
    if found == required_subject(domain) { Ok(()) } else { Err(SubjectError::Subject { found }) }
}

/// The subject of the first certificate in `pem` as an RFC 4514 string, as neon's proxy
/// renders it (x509-cert's `Name` display): the last RDN first, RDNs joined by `,`, the
/// attributes of one RDN by `+`, known attribute types by their short name.
pub fn subject(pem: &str) -> Result<String, SubjectError> {
    let not = |e: &dyn std::fmt::Display| SubjectError::NotACertificate(e.to_string());
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| not(&e))?;
    if pem.label != "CERTIFICATE" {
        return Err(SubjectError::NotACertificate(format!("a {} block", pem.label)));
    }
    let (_, certificate) = X509Certificate::from_der(&pem.contents).map_err(|e| not(&e))?;
    Ok(rfc4514(certificate.subject()))
}

fn rfc4514(name: &X509Name) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type();
                    let kind = x509_parser::objects::oid2abbrev(oid, registry).map_or_else(|_| oid.to_id_string(), str::to_string);
                    let value = match attribute.as_str() {
                        Ok(text) => escape(text),
                        Err(_) => format!("#{}", hex::encode(attribute.attr_value().data)),
                    };
                    format!("{kind}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
        if edge || matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

    fn certificate(dn: &[(rcgen::DnType, &str)]) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["*.neon.example.com".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in dn {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    /// The subject string as neon's proxy computes it: x509-cert's `Name` display
    /// (`proxy/src/tls/server_config.rs`, `certificate.tbs_certificate.subject.to_string()`).
    fn neons_subject(pem: &str) -> String {
        use x509_cert::der::DecodePem as _;
        x509_cert::Certificate::from_pem(pem.as_bytes()).unwrap().tbs_certificate.subject.to_string()
    }

    #[test]
    fn generated_certificates_have_exactly_the_subject_the_proxy_needs() {
        let (cert, key) = self_signed("neon.example.com").unwrap();
        assert!(key.0.contains("PRIVATE KEY-----"));
        assert_eq!(subject(&cert.0).unwrap(), "CN=*.neon.example.com");
        assert_eq!(neons_subject(&cert.0), "CN=*.neon.example.com");
        assert_eq!(check_proxy_subject(&cert.0, "neon.example.com"), Ok(()));
        // The wildcard is a SAN too.
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.0.as_bytes()).unwrap();
        let parsed = pem.parse_x509().unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("*.neon.example.com"));
    }

    #[test]
    fn subjects_read_as_neons_proxy_reads_them() {
        use rcgen::DnType::{CommonName, CountryName, OrganizationName};
        let cases = [
            (vec![(CommonName, "*.neon.example.com"), (OrganizationName, "neonctl-aws")], "O=neonctl-aws,CN=*.neon.example.com"),
            (vec![(OrganizationName, "acme"), (CommonName, "*.neon.example.com")], "CN=*.neon.example.com,O=acme"),
            (vec![(CountryName, "DE"), (CommonName, "proxy.neon.example.com")], "CN=proxy.neon.example.com,C=DE"),
            (vec![(CommonName, "a,b+c")], "CN=a\\,b\\+c"),
            (vec![], ""),
        ];
        for (dn, expected) in cases {
            let pem = certificate(&dn);
            assert_eq!(subject(&pem).unwrap(), expected, "{dn:?}");
            assert_eq!(neons_subject(&pem), expected, "x509-cert agrees for {dn:?}");
        }
        let extra = certificate(&[(CommonName, "*.neon.example.com"), (OrganizationName, "neonctl-aws")]);
        assert_eq!(
            check_proxy_subject(&extra, "neon.example.com"),
            Err(SubjectError::Subject { found: "O=neonctl-aws,CN=*.neon.example.com".into() })
        );
        assert!(matches!(subject("no pem"), Err(SubjectError::NotACertificate(_))));
        let (_, key) = self_signed("d.example").unwrap();
        assert!(matches!(subject(&key.0), Err(SubjectError::NotACertificate(m)) if m.contains("PRIVATE KEY")));
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
