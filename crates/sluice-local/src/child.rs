//! The project's Python servers (`infra/emulator.py`, `infra/localstripe_server.py`) as child
//! processes: installed into `.venv` on first use, started, and waited for.
//!
//! Each script prints one line, `ready http://HOST:PORT`, once it accepts connections, and exits
//! when its standard input closes (`--exit-on-stdin-eof`); the parent holds that pipe open for as
//! long as it lives, so no server outlives a test binary or the runner, even one that is killed.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context, bail};

use crate::repo_root;

/// A running server; stopped when dropped.
pub struct PythonServer {
    child: Child,
    // Held open: closing it tells the server to exit.
    _stdin: ChildStdin,
    /// `http://HOST:PORT`, from its ready line.
    pub url: String,
}

impl PythonServer {
    /// Runs `infra/bootstrap.sh {component}` unless `.venv`'s python can `import {module}`, then
    /// starts `script` (relative to the repository) with `args` and waits for its ready line.
    pub fn start(
        component: &str,
        module: &str,
        script: &str,
        args: &[&str],
    ) -> anyhow::Result<PythonServer> {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let installed = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let status = Command::new(root.join("infra/bootstrap.sh"))
                .arg(component)
                .status()
                .with_context(|| format!("running infra/bootstrap.sh {component}"))?;
            if !status.success() {
                bail!("infra/bootstrap.sh {component} failed: {status}");
            }
        }
        let mut child = Command::new(&python)
            .arg(root.join(script))
            .args(args)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A parent that pipes stderr without reading it could stall the server.
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} {script}", python.display()))?;
        let stdin = child.stdin.take().expect("stdin piped");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut ready)?;
        let Some(url) = ready.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{script} {} did not start (is the port in use?)",
                args.join(" ")
            );
        };
        Ok(PythonServer {
            url: url.to_owned(),
            child,
            _stdin: stdin,
        })
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
