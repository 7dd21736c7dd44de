//! A stand-in Neon checkout with Neon's build interface: the same Makefile targets, the same
//! cargo binary names (each prints `<name> stand-in`), vendor/postgres-v14..v17 and a
//! rust-toolchain.toml, and build.rustflags in .cargo/config.toml that the binaries refuse to
//! compile without (as Neon needs `--cfg=tokio_unstable`). It has no dependencies and a Cargo.lock, so it builds offline with
//! `--locked`. The Makefile fails the step named by FAIL_STEP, for error tests, and lingers 20 s in
//! the one named by SLOW_STEP, for interruption tests.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BINARIES: [&str; 6] = ["pageserver", "safekeeper", "storage_broker", "storage_controller", "proxy", "compute_ctl"];

/// The toolchain the project itself builds with: installed, so no download is needed.
pub const CURRENT_TOOLCHAIN: &str = "1.95.0";

const MAKEFILE: &str = r#"PG := pg_install/v17

define maybe_fail
	@if [ "$(FAIL_STEP)" = "$@" ]; then echo "compiling $@"; echo "error: neon.c:1: simulated compiler failure in $@" >&2; exit 2; fi
	@if [ "$(SLOW_STEP)" = "$@" ]; then echo "lingering in $@"; sleep 20; fi
endef

postgres-headers:
	$(maybe_fail)
	for v in v14 v15 v16 v17; do mkdir -p pg_install/$$v/include/postgresql/server && cp vendor/postgres-$$v/README pg_install/$$v/include/postgresql/server/pg_config.h; done

postgres-install-v17: postgres-headers
	$(maybe_fail)
	mkdir -p $(PG)/bin $(PG)/lib/postgresql $(PG)/share/postgresql/timezone
	cc -O1 -o $(PG)/bin/postgres pgstub/postgres.c
	echo UTC > $(PG)/share/postgresql/timezone/UTC

neon-pg-ext-v17: postgres-install-v17
	$(maybe_fail)
	cc -O1 -shared -fPIC -o $(PG)/lib/postgresql/neon.so pgstub/neon.c
	mkdir -p $(PG)/share/postgresql/extension
	echo "comment = 'neon stand-in'" > $(PG)/share/postgresql/extension/neon.control

walproposer-lib: neon-pg-ext-v17
	$(maybe_fail)
	mkdir -p build/walproposer-lib
	touch build/walproposer-lib/libwalproposer.a

.PHONY: postgres-headers postgres-install-v17 neon-pg-ext-v17 walproposer-lib
"#;

const POSTGRES_C: &str = r#"#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) { puts("postgres (PostgreSQL) 17.5 stand-in"); return 0; }
    puts("postgres stand-in");
    return 0;
}
"#;

pub struct NeonFixture {
    pub dir: tempfile::TempDir,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).current_dir(dir).env_remove("RUSTUP_TOOLCHAIN").output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl NeonFixture {
    /// A committed git checkout pinning `channel`.
    pub fn new(channel: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let members: Vec<String> = BINARIES.iter().map(|b| format!("\"{b}\"")).collect();
        write(
            &root.join("Cargo.toml"),
            &format!(
                "[workspace]\nmembers = [{}]\nresolver = \"2\"\n\n# As neon's own Cargo.toml: full debug info for its binaries, none for dependencies.\n[profile.release]\ndebug = true\n\n[profile.release.package.\"*\"]\ndebug = false\n",
                members.join(", ")
            ),
        );
        for bin in BINARIES {
            write(
                &root.join(bin).join("Cargo.toml"),
                &format!(
                    "[package]\nname = \"{bin}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[[bin]]\nname = \"{bin}\"\npath = \"main.rs\"\n\n\
                     [lints.rust]\nunexpected_cfgs = {{ level = \"warn\", check-cfg = [\"cfg(neon_fixture)\"] }}\n"
                ),
            );
            write(
                &root.join(bin).join("main.rs"),
                &format!(
                    "#[cfg(not(neon_fixture))]\ncompile_error!(\"Neon's build.rustflags were dropped\");\n\nfn main() {{\n    if std::env::args().nth(1).as_deref() == Some(\"--version\") {{\n        println!(\"{bin} stand-in 0.1.0\");\n        return;\n    }}\n    println!(\"{bin} stand-in\");\n}}\n"
                ),
            );
        }
        // Like Neon's `--cfg=tokio_unstable`: the build must keep these flags.
        write(&root.join(".cargo/config.toml"), "[build]\nrustflags = [\"--cfg=neon_fixture\"]\n");
        write(&root.join("rust-toolchain.toml"), &format!("[toolchain]\nchannel = \"{channel}\"\n"));
        write(&root.join("Makefile"), MAKEFILE);
        write(&root.join("pgstub/postgres.c"), POSTGRES_C);
        write(&root.join("pgstub/neon.c"), "int neon_stand_in(void) { return 1; }\n");
        for v in ["v14", "v15", "v16", "v17"] {
            write(&root.join(format!("vendor/postgres-{v}/README")), &format!("PostgreSQL {v} stand-in\n"));
        }
        // As Neon's: build/ is not ignored.
        write(&root.join(".gitignore"), "/target/\n/pg_install/\n");
        // The lockfile of a workspace without dependencies; rustup would read the pin, so use
        // the current toolchain explicitly (the pin may name one that is not installed).
        run(root, "cargo", &[&format!("+{CURRENT_TOOLCHAIN}"), "generate-lockfile", "--offline"]);
        run(root, "git", &["init", "-q"]);
        run(root, "git", &["add", "-A"]);
        run(root, "git", &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "stand-in neon"]);
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }

    pub fn vendor(&self, version: &str) -> PathBuf {
        self.path().join(format!("vendor/postgres-{version}"))
    }
}
