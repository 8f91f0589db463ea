//! Where things are: the workspace root, the stage profiles, the built binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use conformance::profile::{self, Profile};

/// The workspace root (xtask lives one level down).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root().join("target"),
    }
}

/// Profiles matching `selector`: `all`, a stage (`ch07`, with its variants
/// `ch07-*`), or one variant by its full name.
pub fn select(selector: &str) -> Result<Vec<Profile>, String> {
    let all = profile::load_all(&profile::default_dir())?;
    if selector == "all" {
        return Ok(all);
    }
    let chosen: Vec<Profile> = all
        .iter()
        .filter(|p| p.stage == selector || p.stage.starts_with(&format!("{selector}-")))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|p| p.stage.as_str()).collect();
        return Err(format!(
            "no stage {selector:?}; the stages are: {}",
            names.join(", ")
        ));
    }
    Ok(chosen)
}

/// `cargo build --release` of the given packages; their binaries' paths.
pub fn build_release(packages: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["build", "--release", "--quiet"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {} failed", packages.join(", ")));
    }
    Ok(())
}

/// `cargo run --release --quiet -p PACKAGE --`, from the workspace root:
/// add the tool's own arguments. For the tools kept out of default-members
/// (the book's builder, the bench), so that only their commands build them.
pub fn cargo_run_release(package: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["run", "--release", "--quiet", "-p", package, "--"]);
    cmd
}

/// The release binary of a package.
pub fn binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// The suite's command template for a profile: `BIN --listen {listen} ARGS`.
pub fn command_for(profile: &Profile) -> String {
    let mut line = format!(
        "{} --listen {{listen}}",
        shlex::try_quote(&binary(&profile.binary).to_string_lossy())
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| binary(&profile.binary).to_string_lossy().into_owned())
    );
    for arg in &profile.args {
        line.push(' ');
        line.push_str(
            &shlex::try_quote(arg)
                .map(|q| q.into_owned())
                .unwrap_or_default(),
        );
    }
    line
}
