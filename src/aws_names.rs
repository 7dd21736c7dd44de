//! The naming rules of every AWS resource a prefix becomes, so that a bad name fails at config
//! load, not halfway through `infra`.

use std::fmt;

/// Prefixes AWS reserves somewhere a prefix ends up (S3: xn--, sthree-, amzn-s3-demo-;
/// tag keys and IAM service roles: aws).
const RESERVED_PREFIXES: [&str; 4] = ["aws", "amzn", "xn--", "sthree-"];
pub const PREFIX_MAX: usize = 24;

pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let len = prefix.len();
    if len < 2 {
        return Err(format!("`{prefix}` is too short: use at least 2 characters"));
    }
    if len > PREFIX_MAX {
        return Err(format!("`{prefix}` has {len} characters; use at most {PREFIX_MAX} (it is part of bucket and role names)"));
    }
    if prefix.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "`{prefix}` has uppercase letters; use lowercase (S3 bucket and ECR names are lowercase), e.g. `{}`",
            prefix.to_ascii_lowercase()
        ));
    }
    if let Some(bad) = prefix.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("`{prefix}` contains `{bad}`; use only lowercase letters, digits and hyphens"));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("`{prefix}` must start with a letter"));
    }
    if prefix.ends_with('-') {
        return Err(format!("`{prefix}` must end with a letter or digit"));
    }
    if prefix.contains("--") && !prefix.starts_with("xn--") {
        return Err(format!("`{prefix}` contains two hyphens in a row, which ECR repository names do not allow"));
    }
    if let Some(reserved) = RESERVED_PREFIXES.iter().find(|r| prefix.starts_with(*r)) {
        return Err(format!("`{prefix}` starts with `{reserved}`, which AWS reserves; pick another prefix"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    S3Bucket,
    EksCluster,
    EksNodegroup,
    IamRole,
    EcrRepository,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::S3Bucket => "S3 bucket",
            Resource::EksCluster => "EKS cluster",
            Resource::EksNodegroup => "EKS nodegroup",
            Resource::IamRole => "IAM role",
            Resource::EcrRepository => "ECR repository",
        })
    }
}

impl Resource {
    pub fn check(self, name: &str) -> Result<(), String> {
        match self {
            Resource::S3Bucket => check_bucket(name),
            Resource::EksCluster => check_eks(name, 100),
            Resource::EksNodegroup => check_eks(name, 63),
            Resource::IamRole => {
                check_len(name, 1, 64)?;
                match name.chars().find(|c| !(c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c))) {
                    Some(c) => Err(format!("`{c}` is not allowed (letters, digits and +=,.@_- are)")),
                    None => Ok(()),
                }
            }
            Resource::EcrRepository => {
                check_len(name, 2, 256)?;
                let component_ok = |part: &str| {
                    !part.is_empty()
                        && part
                            .split(['.', '_', '-'])
                            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
                };
                if name.split('/').all(component_ok) {
                    Ok(())
                } else {
                    Err("use lowercase letters and digits, separated by single . _ - or /".into())
                }
            }
        }
    }
}

fn check_len(name: &str, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&name.len()) { Ok(()) } else { Err(format!("{} characters; the limit is {min} to {max}", name.len())) }
}

fn check_eks(name: &str, max: usize) -> Result<(), String> {
    check_len(name, 1, max)?;
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        Some(c) => Err(format!("`{c}` is not allowed (letters, digits, - and _ are)")),
        None => Ok(()),
    }
}

fn check_bucket(name: &str) -> Result<(), String> {
    check_len(name, 3, 63)?;
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("`{c}` is not allowed: bucket names use lowercase letters, digits, hyphens and dots"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    if name.contains("..") {
        return Err("must not contain two dots in a row".into());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not look like an IP address".into());
    }
    for reserved in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(reserved) {
            return Err(format!("must not start with `{reserved}` (reserved by S3)"));
        }
    }
    for reserved in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(reserved) {
            return Err(format!("must not end with `{reserved}` (reserved by S3)"));
        }
    }
    Ok(())
}

/// Regions this binary knows. A newer one needs `aws.allow_unlisted_region: true`.
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "ca-west-1",
    "mx-central-1",
    "sa-east-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
];

pub fn check_region(region: &str, allow_unlisted: bool) -> Result<(), String> {
    if REGIONS.contains(&region) {
        return Ok(());
    }
    let shaped = {
        let parts: Vec<&str> = region.split('-').collect();
        parts.len() >= 3
            && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
            && parts[parts.len() - 1].parse::<u8>().is_ok()
    };
    if allow_unlisted && shaped {
        return Ok(());
    }
    let nearest = REGIONS
        .iter()
        .map(|r| (strsim::levenshtein(region, r), r))
        .min()
        .filter(|(distance, _)| *distance <= 3)
        .map(|(_, r)| format!("; did you mean `{r}`?"))
        .unwrap_or_default();
    let hint = if shaped { " (if it is a new region, set aws.allow_unlisted_region: true)" } else { "" };
    Err(format!("`{region}` is not an AWS region{hint}{nearest}"))
}

/// `host[:port][/path]`, no scheme.
pub fn check_registry(registry: &str) -> Result<(), String> {
    if registry.contains("://") {
        return Err(format!("`{registry}`: write the registry without a scheme, as host[:port]/path"));
    }
    let (host, path) = registry.split_once('/').unwrap_or((registry, ""));
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(format!("`{host}` is not a registry host name"));
    }
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port number"));
    }
    if !path.is_empty() {
        Resource::EcrRepository.check(path).map_err(|e| format!("path `{path}`: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        assert!(check_bucket("neon-123456789012-us-east-1").is_ok());
        for bad in ["ab", "Upper", "a_b", "-ab", "ab-", "a..b", "192.168.1.1", "xn--ab", "ab-s3alias", &"a".repeat(64)] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_resource_rules() {
        assert!(Resource::EcrRepository.check("neon/pageserver").is_ok());
        assert!(Resource::EcrRepository.check("neon//x").is_err());
        assert!(Resource::EcrRepository.check("neon/Page").is_err());
        assert!(Resource::IamRole.check(&"r".repeat(65)).is_err());
        assert!(Resource::IamRole.check("neon-node").is_ok());
        assert!(Resource::EksCluster.check("_x").is_err());
        assert!(Resource::EksNodegroup.check(&"n".repeat(64)).is_err());
    }

    #[test]
    fn registries() {
        assert!(check_registry("127.0.0.1:5000/neon").is_ok());
        assert!(check_registry("registry.example.com").is_ok());
        assert!(check_registry("http://127.0.0.1:5000").is_err());
        assert!(check_registry("host:port").is_err());
    }
}
