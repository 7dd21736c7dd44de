//! The stand-ins the integration tests start, set up where they are missing, so that
//! `cargo xtask test` works on a fresh machine by itself:
//!
//! - moto's server and kubernetes-validate, in a Python virtual environment of the project's
//!   own (`target/stand-ins/venv`), installed with pip and reused while their requirements stay;
//! - Debian's docker-registry and postgresql (and pkg-config, make and a C compiler for the
//!   stand-in Neon checkout), with apt-get when running as root, else the exact command to run;
//! - the Docker Engine, which is the machine's: only checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What pip installs into the virtual environment; a change reinstalls.
const PYTHON_REQUIREMENTS: [&str; 2] = ["moto[server]>=5.1,<6", "kubernetes-validate>=1.33,<2"];

/// Debian packages: (package, whether it is there).
fn debian_packages() -> Vec<(&'static str, bool)> {
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| versions.filter_map(Result::ok).any(|v| v.path().join("bin/initdb").is_file()))
        .unwrap_or(false);
    vec![
        ("docker-registry", Path::new("/usr/bin/docker-registry").is_file()),
        ("postgresql", postgres),
        ("pkg-config", on_path("pkg-config")),
        ("make", on_path("make")),
        ("gcc", on_path("cc")),
        ("libc6-dev", Path::new("/usr/include/stdio.h").is_file()),
    ]
}

/// The programs the tests are pointed at.
pub struct StandIns {
    pub moto: PathBuf,
    pub registry: PathBuf,
    pub validator: PathBuf,
}

pub fn ensure(root: &Path) -> Result<StandIns> {
    install_debian_packages()?;
    let venv = python_tools(&root.join("target/stand-ins/venv"))?;
    let docker_ok = Command::new("docker").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !docker_ok {
        bail!("the integration tests need a running Docker Engine: `docker version` fails (set DOCKER_HOST, or start dockerd)");
    }
    Ok(StandIns {
        moto: venv.join("bin/moto_server"),
        registry: PathBuf::from("/usr/bin/docker-registry"),
        validator: venv.join("bin/kubernetes-validate"),
    })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn install_debian_packages() -> Result<()> {
    let missing: Vec<&str> = debian_packages().into_iter().filter(|(_, there)| !there).map(|(name, _)| name).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !is_root() || !on_path("apt-get") {
        bail!("the integration tests need Debian packages that are missing; run:\n  sudo apt-get update && sudo {command}");
    }
    eprintln!("xtask: installing {}", missing.join(", "));
    let run = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed; run `{command}` by hand to see why", args.join(" "));
        }
        Ok(())
    };
    // The packages' own services are not wanted: the tests start registries and servers
    // themselves. policy-rc.d keeps them stopped while installing.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing /usr/sbin/policy-rc.d")?;
        set_executable(policy)?;
    }
    let result = run(&["update", "-qq"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        run(&args)
    });
    if !had_policy {
        std::fs::remove_file(policy).context("removing /usr/sbin/policy-rc.d")?;
    }
    result
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", path.display()))
}

/// The virtual environment with moto and kubernetes-validate, made or brought up to date.
fn python_tools(venv: &Path) -> Result<PathBuf> {
    let stamp = venv.join("neonctl-requirements.txt");
    let wanted = PYTHON_REQUIREMENTS.join("\n");
    let ready = ["bin/moto_server", "bin/kubernetes-validate"].iter().all(|p| venv.join(p).is_file());
    if ready && std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(venv.to_path_buf());
    }
    eprintln!("xtask: installing {} into {}", PYTHON_REQUIREMENTS.join(", "), venv.display());
    let make_venv = || Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv).stdout(Stdio::null()).status();
    if !make_venv().is_ok_and(|s| s.success()) {
        // Debian's own python3 keeps venv (ensurepip) in a package of its own.
        if is_root() && on_path("apt-get") {
            let installed = Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !installed || !make_venv().is_ok_and(|s| s.success()) {
                bail!("could not make a Python virtual environment at {}: `python3 -m venv` fails", venv.display());
            }
        } else {
            bail!("`python3 -m venv {}` fails; install python3 with venv (Debian: sudo apt-get install python3-venv)", venv.display());
        }
    }
    let status = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_REQUIREMENTS)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip could not install {} into {}", PYTHON_REQUIREMENTS.join(", "), venv.display());
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(venv.to_path_buf())
}
