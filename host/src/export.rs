//! `mayfly export`: hands the formation to the process managers that run
//! things in production, instead of growing one inside mayfly.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::manifest::{Kind, Manifest};
use crate::supervisor::Formation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A template unit per process type and a target that starts the formation.
    Systemd,
    /// A Deployment per process type (and a Service per web type).
    Kubernetes,
    /// A Procfile, for Foreman, Honcho, Heroku and the like.
    Procfile,
}

/// One generated file: its name and its text.
pub struct File {
    pub name: String,
    pub text: String,
}

/// The app's name: the manifest directory's name, made safe for unit and
/// Kubernetes names.
pub fn app_name(manifest: &Manifest) -> String {
    let raw = manifest
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "app".into()
    } else {
        name
    }
}

pub fn export(
    target: Target,
    manifest: &Manifest,
    formation: &Formation,
    mayfly: &Path,
) -> Vec<File> {
    match target {
        Target::Procfile => vec![procfile(manifest)],
        Target::Systemd => systemd(manifest, formation, mayfly),
        Target::Kubernetes => vec![kubernetes(manifest, formation)],
    }
}

fn procfile(manifest: &Manifest) -> File {
    let mut text = String::new();
    for name in manifest.processes.keys() {
        let _ = writeln!(text, "{name}: mayfly run {name}");
    }
    File {
        name: "Procfile".into(),
        text,
    }
}

fn systemd(manifest: &Manifest, formation: &Formation, mayfly: &Path) -> Vec<File> {
    let app = app_name(manifest);
    let grace = manifest.app.grace.as_secs().max(1);
    let mut files = Vec::new();
    let mut wants = Vec::new();
    for (name, process) in &manifest.processes {
        let mut text = format!(
            "[Unit]\n\
             Description={app} {name} process %i (mayfly)\n\
             PartOf={app}.target\n\
             After=network.target\n\n\
             [Service]\n\
             Type=notify\n\
             WorkingDirectory={dir}\n\
             ExecStart={mayfly} run {name} --index %i --manifest {manifest}\n\
             Restart=always\n\
             RestartSec=1\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec={grace}\n",
            dir = manifest.dir.display(),
            mayfly = mayfly.display(),
            manifest = manifest.path.display(),
        );
        if process.kind == Kind::Http {
            // All processes of a web type share its port.
            let _ = writeln!(text, "Environment=MAYFLY_REUSE_PORT=true");
        }
        text.push_str("\n[Install]\nWantedBy=multi-user.target\n");
        files.push(File {
            name: format!("{app}-{name}@.service"),
            text,
        });
        let count = formation.0.get(name).copied().unwrap_or(1);
        wants.extend((1..=count).map(|i| format!("{app}-{name}@{i}.service")));
    }
    files.push(File {
        name: format!("{app}.target"),
        text: format!(
            "[Unit]\nDescription={app} formation (mayfly)\nWants={}\n\n[Install]\nWantedBy=multi-user.target\n",
            wants.join(" ")
        ),
    });
    files
}

fn kubernetes(manifest: &Manifest, formation: &Formation) -> File {
    let app = app_name(manifest);
    let grace = manifest.app.grace.as_secs().max(1);
    let mut text = String::new();
    for (name, process) in &manifest.processes {
        let replicas = formation.0.get(name).copied().unwrap_or(1);
        let port = if process.kind == Kind::Http {
            format!(
                "        ports:\n        - containerPort: {port}\n        env:\n        - name: PORT\n          value: \"{port}\"\n",
                port = process.port
            )
        } else {
            String::new()
        };
        let _ = write!(
            text,
            "---\n\
             apiVersion: apps/v1\n\
             kind: Deployment\n\
             metadata:\n  name: {app}-{name}\n  labels:\n    app: {app}\n    process: {name}\n\
             spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {app}\n      process: {name}\n\
             \x20 template:\n    metadata:\n      labels:\n        app: {app}\n        process: {name}\n\
             \x20   spec:\n      terminationGracePeriodSeconds: {grace}\n      containers:\n\
             \x20     - name: {name}\n        image: {app}:latest\n        command: [\"mayfly\", \"run\", \"{name}\"]\n{port}"
        );
        if process.kind == Kind::Http {
            let _ = write!(
                text,
                "---\n\
                 apiVersion: v1\n\
                 kind: Service\n\
                 metadata:\n  name: {app}-{name}\n\
                 spec:\n  selector:\n    app: {app}\n    process: {name}\n  ports:\n  - port: {port}\n    targetPort: {port}\n",
                port = process.port
            );
        }
    }
    File {
        name: format!("{app}.yaml"),
        text,
    }
}

/// Writes the files into `out`, or prints them when there is no `out`.
pub fn write(files: &[File], out: Option<&PathBuf>) -> Result<()> {
    match out {
        None => {
            for file in files {
                if files.len() > 1 {
                    println!("# {}", file.name);
                }
                print!("{}", file.text);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for file in files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.text)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
