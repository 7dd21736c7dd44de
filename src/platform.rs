//! Which CPU the nodes run, and whether this host can produce binaries for them: `build` and
//! `images` put host binaries (Neon's, and the control plane's) into the images the nodes run,
//! so a host of another OS or CPU would only show up as pods that never start.

use std::path::Path;

/// A CPU architecture, as Linux and EKS name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// `linux/amd64` or `linux/arm64`.
    pub fn platform(self) -> &'static str {
        match self {
            Self::X86_64 => "linux/amd64",
            Self::Aarch64 => "linux/arm64",
        }
    }

    /// Rust's target triple for it (glibc).
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-gnu",
            Self::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// From `std::env::consts::ARCH`.
    pub fn from_rust(arch: &str) -> Option<Self> {
        match arch {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Aarch64),
            _ => None,
        }
    }

    /// An instance type of this architecture to suggest.
    pub fn example_instance_type(self) -> &'static str {
        match self {
            Self::X86_64 => "m6i.xlarge",
            Self::Aarch64 => "m7g.xlarge",
        }
    }
}

/// The default node type: one of this host's CPU, so that what `build` makes here runs there.
pub fn host_instance_type() -> &'static str {
    Arch::from_rust(std::env::consts::ARCH).unwrap_or(Arch::X86_64).example_instance_type()
}

/// The architecture of an EC2 instance type: Graviton families carry a `g` right after their
/// generation digit (m7g, c6gn, r8gd, t4g, im4gn, x2gd), every other family is x86_64 (g5 is
/// a GPU family of x86 hosts).
pub fn instance_arch(instance_type: &str) -> Arch {
    let family = instance_type.split('.').next().unwrap_or_default();
    let after_letters = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = after_letters.trim_start_matches(|c: char| c.is_ascii_digit());
    if after_letters.len() != after_digits.len() && after_digits.starts_with('g') { Arch::Aarch64 } else { Arch::X86_64 }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "this host is {os}/{arch}, but the nodes ({instance_type}) run {}: the binaries built here go into their images and \
         would not start there. Run build and images on a Linux {} machine (a CI runner, or a VM in the same region), or \
         choose nodes of this host's CPU (cluster.node_instance_type{})",
        .nodes.platform(), .nodes.platform(), suggestion(.arch)
    )]
    Host { os: String, arch: String, instance_type: String, nodes: Arch },
    #[error(
        "{path} is {found}, but the nodes ({instance_type}) run {}: reinstall neonctl-aws on a Linux {} host with \
         `cargo install --path .`, which builds it beside the CLI",
        .nodes.platform(), .nodes.platform()
    )]
    Binary { path: String, found: String, instance_type: String, nodes: Arch },
}

fn suggestion(host_arch: &str) -> String {
    Arch::from_rust(host_arch).map(|arch| format!(", e.g. {}", arch.example_instance_type())).unwrap_or_default()
}

/// Whether a host of `os`/`arch` (`std::env::consts`) builds binaries nodes of
/// `instance_type` run.
pub fn check_host(os: &str, arch: &str, instance_type: &str) -> Result<(), PlatformError> {
    let nodes = instance_arch(instance_type);
    if os == "linux" && Arch::from_rust(arch) == Some(nodes) {
        return Ok(());
    }
    Err(PlatformError::Host { os: os.into(), arch: arch.into(), instance_type: instance_type.into(), nodes })
}

/// This host against nodes of `instance_type`.
pub fn check_this_host(instance_type: &str) -> Result<(), PlatformError> {
    check_host(std::env::consts::OS, std::env::consts::ARCH, instance_type)
}

/// What the executable at the start of `bytes` is: a Linux ELF of an [`Arch`], or a
/// description of what else it is.
pub fn executable_arch(bytes: &[u8]) -> Result<Arch, String> {
    match bytes {
        [0x7f, b'E', b'L', b'F', class, data, _, osabi, ..] if bytes.len() >= 20 => {
            if *class != 2 || *data != 1 {
                return Err("a 32-bit or big-endian ELF file".into());
            }
            // System V or GNU/Linux; FreeBSD and others differ here.
            if *osabi != 0 && *osabi != 3 {
                return Err(format!("an ELF file for another OS (OS ABI {osabi})"));
            }
            match u16::from_le_bytes([bytes[18], bytes[19]]) {
                62 => Ok(Arch::X86_64),
                183 => Ok(Arch::Aarch64),
                machine => Err(format!("an ELF file for machine {machine}")),
            }
        }
        [0xcf, 0xfa, 0xed, 0xfe, ..] | [0xca, 0xfe, 0xba, 0xbe, ..] => Err("a macOS (Mach-O) executable".into()),
        [b'M', b'Z', ..] => Err("a Windows executable".into()),
        _ => Err("not an executable".into()),
    }
}

/// Checks that the executable at `path` runs on nodes of `instance_type`.
pub fn check_binary(path: &Path, instance_type: &str) -> Result<(), PlatformError> {
    use std::io::Read as _;
    let nodes = instance_arch(instance_type);
    let mut head = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut file| file.read(&mut head));
    let found = match read {
        Ok(n) => executable_arch(&head[..n])
            .and_then(|arch| if arch == nodes { Ok(()) } else { Err(format!("a {} executable", arch.platform())) }),
        Err(e) => Err(format!("unreadable ({e})")),
    };
    found.map_err(|found| PlatformError::Binary { path: path.display().to_string(), found, instance_type: instance_type.into(), nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types_name_their_architecture() {
        for arm in ["m7g.xlarge", "c6gn.large", "r8gd.2xlarge", "t4g.medium", "im4gn.large", "x2gd.xlarge", "m6g.metal"] {
            assert_eq!(instance_arch(arm), Arch::Aarch64, "{arm}");
        }
        for x86 in ["m6i.xlarge", "m7i.xlarge", "c6a.large", "g5.xlarge", "t3.large", "r6id.large", "inf2.xlarge", "m5zn.large"] {
            assert_eq!(instance_arch(x86), Arch::X86_64, "{x86}");
        }
    }

    #[test]
    fn the_default_nodes_run_what_this_host_builds() {
        let host = std::env::consts::ARCH;
        assert_eq!(check_host("linux", host, host_instance_type()), Ok(()));
        assert_eq!(crate::config::Config::default().cluster.node_instance_type, host_instance_type());
    }

    /// A fake host: a Mac or another CPU is refused with the way out, before any work.
    #[test]
    fn hosts_that_cannot_build_for_the_nodes_are_refused() {
        assert_eq!(check_host("linux", "x86_64", "m6i.xlarge"), Ok(()));
        assert_eq!(check_host("linux", "aarch64", "m7g.xlarge"), Ok(()));
        let mac = check_host("macos", "aarch64", "m6i.xlarge").unwrap_err().to_string();
        assert!(mac.contains("this host is macos/aarch64") && mac.contains("nodes (m6i.xlarge) run linux/amd64"), "{mac}");
        assert!(mac.contains("Run build and images on a Linux linux/amd64 machine") && mac.contains("e.g. m7g.xlarge"), "{mac}");
        let arm = check_host("linux", "aarch64", "m6i.xlarge").unwrap_err().to_string();
        assert!(arm.contains("cluster.node_instance_type, e.g. m7g.xlarge"), "{arm}");
        assert!(check_host("linux", "x86_64", "m7g.large").is_err(), "x86 binaries on Graviton nodes");
    }

    #[test]
    fn executables_are_told_apart_by_their_header() {
        let elf = |machine: u16| {
            let mut head = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];
            head.extend(machine.to_le_bytes());
            head
        };
        assert_eq!(executable_arch(&elf(62)), Ok(Arch::X86_64));
        assert_eq!(executable_arch(&elf(183)), Ok(Arch::Aarch64));
        assert!(executable_arch(&elf(40)).unwrap_err().contains("machine 40"));
        assert!(executable_arch(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]).unwrap_err().contains("Mach-O"));
        assert!(executable_arch(b"#!/bin/sh\n").is_err());
        // This very test binary is a Linux executable of the host's CPU.
        let me = std::env::current_exe().unwrap();
        let host = Arch::from_rust(std::env::consts::ARCH).unwrap();
        check_binary(&me, host.example_instance_type()).unwrap();
        let other = if host == Arch::X86_64 { "m7g.xlarge" } else { "m6i.xlarge" };
        let err = check_binary(&me, other).unwrap_err().to_string();
        assert!(err.contains(&format!("is a {} executable", host.platform())) && err.contains("cargo install --path ."), "{err}");
    }
}
