//! `mayfly build`: runs each process type's `build` command with a guest
//! toolchain that works on this machine.
//!
//! Two toolchains are known:
//! - **rustup**: the active Rust toolchain has the `wasm32-wasip2` target
//!   installed; `cargo build --target wasm32-wasip2` works as written.
//! - **system**: the distribution's Rust (`/usr/bin/rustc` with its std
//!   source), wasi-libc and `wasm-component-ld`. std is built for the target
//!   from source (`-Zbuild-std`), which needs no download at all. The build
//!   command is run with `cargo` and `rustc` pointing at that toolchain.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::manifest::Manifest;

const TARGET: &str = "wasm32-wasip2";

/// A way to build `wasm32-wasip2` components on this machine.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// The rustup toolchain on PATH has the target.
    Rustup,
    /// The distribution's toolchain with std built from source.
    System {
        rustc: PathBuf,
        cargo: PathBuf,
        component_ld: PathBuf,
        wasi_libc: PathBuf,
    },
}

impl std::fmt::Display for Toolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Toolchain::Rustup => write!(f, "rustup toolchain with the {TARGET} target"),
            Toolchain::System { rustc, .. } => {
                write!(
                    f,
                    "system toolchain {} with std built from source",
                    rustc.display()
                )
            }
        }
    }
}

/// Finds a toolchain that can build guests, preferring rustup's target.
pub fn detect() -> Result<Toolchain> {
    let sysroot = rustc_sysroot();
    if let Some(sysroot) = &sysroot {
        if sysroot
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
        {
            return Ok(Toolchain::Rustup);
        }
    }
    if let Some(system) = system_toolchain(sysroot.as_deref()) {
        return Ok(system);
    }
    bail!(
        "no toolchain here can build {TARGET} components. Either run \
         `rustup target add {TARGET}`, or (where rustup cannot download) install \
         the distribution's Rust with its std source, lld and wasi-libc: on Debian \
         `apt-get install rustc-web cargo-web rust-web-src lld wasi-libc` \
         (scripts/setup does this for you)"
    )
}

/// The sysroot of the `rustc` on PATH (rustup's, where rustup is installed).
fn rustc_sysroot() -> Option<PathBuf> {
    let output = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn system_toolchain(sysroot: Option<&Path>) -> Option<Toolchain> {
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo = PathBuf::from("/usr/bin/cargo");
    let wasi_libc = PathBuf::from("/usr/lib/wasm32-wasi");
    let std_source = Path::new("/usr/lib/rustlib/src/rust/library");
    if !(rustc.exists()
        && cargo.exists()
        && wasi_libc.join("libc.a").exists()
        && std_source.is_dir())
    {
        return None;
    }
    Some(Toolchain::System {
        rustc,
        cargo,
        component_ld: find_component_ld(sysroot)?,
        wasi_libc,
    })
}

/// `wasm-component-ld` can be on PATH (from `cargo install`), and ships
/// inside every rustup toolchain next to `rust-lld`.
fn find_component_ld(sysroot: Option<&Path>) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("wasm-component-ld"));
    let in_toolchain = sysroot
        .and_then(|sysroot| std::fs::read_dir(sysroot.join("lib/rustlib")).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|host| host.path().join("bin/wasm-component-ld"));
    on_path
        .chain(in_toolchain)
        .find(|candidate| candidate.is_file())
}

impl Toolchain {
    /// Prepares `command` (a shell running a build command) to use this
    /// toolchain. `shim_dir` is a directory this function may write to.
    fn apply(&self, command: &mut Command, shim_dir: &Path) -> Result<()> {
        let Toolchain::System {
            rustc,
            cargo,
            component_ld,
            wasi_libc,
        } = self
        else {
            return Ok(());
        };
        // The build command says `cargo`; put the system cargo and rustc
        // first on PATH so it finds them, whatever else PATH holds.
        std::fs::create_dir_all(shim_dir)
            .with_context(|| format!("creating {}", shim_dir.display()))?;
        for (name, target) in [("cargo", cargo), ("rustc", rustc)] {
            let link = shim_dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link)
                .with_context(|| format!("creating {}", link.display()))?;
        }
        let mut path = OsString::from(shim_dir);
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(":");
            path.push(rest);
        }
        command
            .env("PATH", path)
            .env("RUSTC", rustc)
            .env_remove("RUSTUP_TOOLCHAIN")
            // -Zbuild-std on a stable compiler: the distribution ships no
            // prebuilt std for the target, only its source.
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort")
            .env(
                "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                format!(
                    "-C linker={} -L {} -C link-self-contained=no",
                    component_ld.display(),
                    wasi_libc.display()
                ),
            );
        Ok(())
    }
}

/// Builds the component of every process type that has a `build` command.
/// Process types that share a command are built once.
pub fn build(manifest: &Manifest) -> Result<()> {
    let commands: BTreeSet<&str> = manifest
        .processes
        .values()
        .filter_map(|p| p.build.as_deref())
        .collect();
    if commands.is_empty() {
        tracing::info!(
            "no process type in {} has a `build` command",
            manifest.path.display()
        );
    } else {
        let toolchain = detect()?;
        tracing::info!("guest toolchain: {toolchain}");
        let shim_dir = manifest.dir.join(".mayfly").join("toolchain");
        for line in commands {
            let started = Instant::now();
            tracing::info!("building: {line}");
            let mut command = Command::new("sh");
            command.arg("-c").arg(line).current_dir(&manifest.dir);
            toolchain.apply(&mut command, &shim_dir)?;
            let status = command
                .status()
                .with_context(|| format!("cannot run `{line}`"))?;
            if !status.success() {
                bail!(
                    "`{line}` failed ({status}) in {}: its output above says why",
                    manifest.dir.display()
                );
            }
            tracing::info!("built in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    for process in manifest.processes.values() {
        if !process.component.exists() {
            bail!(
                "process type `{}`: {} does not exist after the build: make `build` \
                 produce it, or point `component` at what it produces",
                process.name,
                process.component.display()
            );
        }
    }
    Ok(())
}
