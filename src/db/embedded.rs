//! A private, throwaway PostgreSQL cluster started from the binaries on the
//! machine: `initdb` into a temporary directory, a unix socket in that
//! directory and a free loopback port, stopped and removed on exit.
//!
//! Cleanup does not depend on this process exiting politely: a small
//! watchdog shell process stops the postmaster and removes the directory as
//! soon as this process is gone, whether it returned, panicked, was killed by
//! Ctrl-C or by SIGKILL.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Where to look for `initdb`, `pg_ctl` and `postgres` when they are not on PATH.
const SEARCH_GLOBS: &[&str] = &["/usr/lib/postgresql", "/usr/local/pgsql/bin", "/opt/homebrew/opt"];

#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Keep the cluster in this directory after exit (created if missing; reused if it holds one).
    pub keep_dir: Option<PathBuf>,
    /// Extra `postgres -c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// Explicit directory holding the PostgreSQL binaries.
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub struct EmbeddedPg {
    dir: PathBuf,
    port: u16,
    keep: bool,
    postmaster: Option<Child>,
    watchdog: Option<Child>,
    pub bin_dir: PathBuf,
    pub superuser: String,
}

/// The user the cluster runs as when this process is root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl EmbeddedPg {
    /// Start a cluster. Blocks until it accepts connections (a few seconds).
    pub fn start(opts: &EmbeddedOptions) -> Result<EmbeddedPg> {
        let bin_dir = match &opts.bin_dir {
            Some(d) => d.clone(),
            None => find_bin_dir()?,
        };
        let run_as = run_as_user()?;
        let (dir, keep) = match &opts.keep_dir {
            Some(d) => {
                fs::create_dir_all(d).with_context(|| format!("creating --keep-db directory {}", d.display()))?;
                (fs::canonicalize(d)?, true)
            }
            None => (make_temp_dir()?, false),
        };
        if let Some(u) = &run_as {
            chown_tree(&dir, u)?;
        }
        let data = dir.join("data");
        let superuser = "postgres".to_string();
        if !data.join("PG_VERSION").exists() {
            let out = pg_command(&bin_dir.join("initdb"), run_as.as_ref())
                .arg("-D")
                .arg(&data)
                .args(["-U", &superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
                .stdin(Stdio::null())
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                // As root the cluster runs as another user, who must be able to
                // reach the directory: say so rather than leave a bare EACCES.
                let hint = match &run_as {
                    Some(u) if err.contains("Permission denied") => format!(
                        " (the cluster runs as user {}, who cannot reach {}: make its parent directories searchable, e.g. chmod o+x, or keep it under /tmp)",
                        u.name,
                        dir.display()
                    ),
                    _ => String::new(),
                };
                bail!("initdb failed in {}: {}{hint}", data.display(), err.trim());
            }
        }
        // A previous run with --keep-db may have left a stale pid file.
        let _ = fs::remove_file(data.join("postmaster.pid"));

        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = pg_command(&bin_dir.join("postgres"), run_as.as_ref());
            cmd.arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                // Throwaway data: durability buys nothing here and costs a lot.
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "max_connections=200", "-c", "shared_buffers=256MB"])
                .args(["-c", "logging_collector=off", "-c", "log_min_messages=warning"]);
            for (k, v) in &opts.settings {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            let log = fs::File::create(dir.join("postgres.log"))?;
            if let Some(u) = &run_as {
                let _ = std::os::unix::fs::chown(dir.join("postgres.log"), Some(u.uid), Some(u.gid));
            }
            cmd.stdout(Stdio::null()).stderr(log).stdin(Stdio::null());
            // Its own process group: a Ctrl-C in the terminal reaches us, and we
            // decide when the database stops.
            cmd.process_group(0);
            let child = cmd.spawn().context("starting postgres")?;
            let mut pg = EmbeddedPg {
                dir: dir.clone(),
                port,
                keep,
                postmaster: Some(child),
                watchdog: None,
                bin_dir: bin_dir.clone(),
                superuser: superuser.clone(),
            };
            match pg.wait_ready(Duration::from_secs(30)) {
                Ok(()) => {
                    pg.watchdog = Some(spawn_watchdog(&dir, keep)?);
                    return Ok(pg);
                }
                Err(e) => {
                    last_err = Some(e);
                    pg.stop();
                    // The port may have been taken between probing and binding: try another.
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("postgres did not start")))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let socket = self.dir.join(format!(".s.PGSQL.{}", self.port));
        let started = Instant::now();
        loop {
            if let Some(child) = self.postmaster.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "postgres exited during startup ({status}): {}",
                    tail_of(&self.dir.join("postgres.log"))
                );
            }
            if socket.exists() {
                let ok = Command::new(self.bin_dir.join("pg_isready"))
                    .arg("-h")
                    .arg(&self.dir)
                    .arg("-p")
                    .arg(self.port.to_string())
                    .arg("-q")
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "postgres did not accept connections within {timeout:?}: {}",
                    tail_of(&self.dir.join("postgres.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Take a base backup of this cluster into `dest/data`, configured as a
    /// streaming standby of it (pg_basebackup -R). Start it with
    /// `EmbeddedPg::start` and `keep_dir: Some(dest)`.
    pub fn base_backup(&self, dest: &Path) -> Result<()> {
        let run_as = run_as_user()?;
        fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o700))?;
        if let Some(u) = &run_as {
            chown_tree(dest, u)?;
        }
        let out = pg_command(&self.bin_dir.join("pg_basebackup"), run_as.as_ref())
            .arg("-D")
            .arg(dest.join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", &self.superuser])
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup into {} failed: {}",
                dest.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for database `db` over the unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}@localhost:{}/{}?host={}",
            self.superuser,
            self.port,
            db,
            self.dir.display()
        )
    }

    /// The same database over TCP on the loopback port.
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", self.superuser, self.port, db)
    }

    /// Stop the cluster (fast shutdown) and remove its directory unless kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(5);
    let tail = lines[start..].join(" | ");
    if tail.is_empty() {
        "(no log output)".into()
    } else {
        tail
    }
}

/// The directory that holds initdb, pg_ctl and postgres: BACKSTOP_PG_BIN, else
/// PATH, else the usual install locations (newest major version first).
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("BACKSTOP_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
        bail!(
            "BACKSTOP_PG_BIN={} does not contain initdb and postgres: point it at the PostgreSQL bin directory, \
             or unset it to search PATH and /usr/lib/postgresql/*/bin",
            dir.display()
        );
    }
    let roots: Vec<&Path> = SEARCH_GLOBS.iter().map(Path::new).collect();
    find_bin_dir_in(std::env::var_os("PATH").as_deref(), &roots)
}

/// The search itself, over an explicit PATH and install roots.
pub fn find_bin_dir_in(path: Option<&std::ffi::OsStr>, roots: &[&Path]) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = path {
        for p in std::env::split_paths(path) {
            if p.join("initdb").is_file() {
                // Debian puts wrappers in /usr/bin; follow a symlink to the real bin dir.
                let real = fs::canonicalize(p.join("initdb"))
                    .ok()
                    .and_then(|f| f.parent().map(Path::to_path_buf))
                    .unwrap_or(p.clone());
                candidates.push(real);
                candidates.push(p);
            }
        }
    }
    for root in roots {
        if root.join("initdb").is_file() {
            candidates.push(root.to_path_buf());
        }
        if let Ok(entries) = fs::read_dir(root) {
            let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
            versions.sort_by_key(|p| std::cmp::Reverse(version_key(p)));
            candidates.extend(versions);
        }
    }
    for c in candidates {
        if c.join("initdb").is_file() && c.join("postgres").is_file() && c.join("pg_isready").is_file() {
            return Ok(c);
        }
    }
    bail!(
        "no PostgreSQL server binaries found (looked for initdb and postgres on PATH and under /usr/lib/postgresql/*/bin). \
         Install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql), \
         set BACKSTOP_PG_BIN to their directory, or set DATABASE_URL to use a running server"
    )
}

fn version_key(p: &Path) -> u32 {
    p.parent()
        .and_then(|v| v.file_name())
        .and_then(|v| v.to_str())
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn run_as_user() -> Result<Option<RunAs>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    // Postgres refuses to run as root: use an unprivileged system account.
    for name in ["postgres", "nobody"] {
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            return Ok(Some(RunAs {
                name: name.to_string(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }));
        }
    }
    bail!(
        "running as root, and PostgreSQL refuses to run as root: create an unprivileged user named postgres \
         (useradd --system postgres), run backstop as a normal user, or set DATABASE_URL"
    )
}

fn pg_command(bin: &Path, run_as: Option<&RunAs>) -> Command {
    let mut cmd = Command::new(bin);
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid);
        cmd.env("USER", &u.name).env("HOME", "/tmp");
    }
    // Postgres reads these; a stray value from the caller's environment must not leak in.
    cmd.env_remove("PGDATA").env_remove("PGPORT").env_remove("PGHOST");
    cmd.env("LC_ALL", "C");
    cmd
}

fn make_temp_dir() -> Result<PathBuf> {
    // Short path: the unix socket path must stay under ~100 bytes.
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let name = format!("backstop-pg-{}-{}", std::process::id(), attempt);
        let dir = base.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a temporary directory under {}", base.display())
}

fn chown_tree(dir: &Path, u: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))
        .with_context(|| format!("giving {} to user {}", dir.display(), u.name))?;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                chown_tree(&p, u)?;
            } else {
                let _ = std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid));
            }
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A shell that waits for this process to end, then stops the postmaster and
/// removes the directory. Survives SIGKILL of this process.
fn spawn_watchdog(dir: &Path, keep: bool) -> Result<Child> {
    let me = std::process::id();
    let data = dir.join("data");
    let remove = if keep {
        String::new()
    } else {
        format!("rm -rf '{}'", dir.display())
    };
    let script = format!(
        "trap '' INT HUP; while kill -0 {me} 2>/dev/null; do sleep 0.5; done; \
         pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
         if [ -n \"$pid\" ]; then kill -INT \"$pid\" 2>/dev/null; \
           for i in $(seq 1 100); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done; \
           kill -KILL \"$pid\" 2>/dev/null; fi; {remove}",
        data = data.display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    cmd.spawn().context("starting the cleanup watchdog")
}
