//! The lab's processes: started in process groups of their own (they outlive `vrlab`),
//! output to a log file each, and waited for until they serve. The ones a test may kill
//! and start again (each node's agent, each etcd member) are [`Proc`]s: their command
//! line, log and readiness are kept in the lab's state, so `vrlab start` runs them again
//! exactly as `vrlab up` did.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A binary of this installation: next to `vrlab`, else on PATH.
pub fn bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Starts a process in its own process group (it outlives `vrlab`), output to `log`
/// (made anew).
pub fn spawn(cmd: &mut Command, log: &Path) -> Result<u32> {
    let out = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    spawn_to(cmd, out)
}

fn spawn_to(cmd: &mut Command, out: std::fs::File) -> Result<u32> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(child.id())
}

/// Asks a process to stop (SIGTERM).
pub fn kill(pid: u32) {
    signal(pid, "TERM");
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether a process runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Stops a process and waits (up to `limit`) until it has.
pub fn kill_wait(pid: u32, limit: Duration) {
    kill(pid);
    wait_gone(pid, limit);
}

fn wait_gone(pid: u32, limit: Duration) {
    let t = Instant::now();
    while alive(pid) && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (20 s at most) until `ready`; the error shows the process's log.
pub fn wait_for(what: &str, log: &Path, mut ready: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !ready() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!(
                "{what} did not start:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A free TCP port on the loopback (another process may take it before it is used).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What says a [`Proc`] serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ready {
    /// It accepts connections on this Unix socket.
    Unix(PathBuf),
    /// It accepts TCP connections on this loopback port.
    Tcp(u16),
}

/// A process of the lab that can be killed and started again as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Its output (appended to on each start).
    pub log: PathBuf,
    /// The running process's, or the last one's.
    pub pid: u32,
    pub ready: Ready,
}

impl Proc {
    /// Starts it, its log made anew; [`Proc::wait`] says when it serves.
    pub fn spawn(argv: Vec<String>, log: PathBuf, ready: Ready) -> Result<Proc> {
        let mut p = Proc {
            argv,
            log,
            pid: 0,
            ready,
        };
        let _ = std::fs::remove_file(&p.log);
        p.again()?;
        Ok(p)
    }

    /// Starts it again (what it wrote before stays in its log).
    pub fn again(&mut self) -> Result<()> {
        let Some((program, args)) = self.argv.split_first() else {
            bail!("a process without a command line");
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("{}", self.log.display()))?;
        self.pid = spawn_to(Command::new(program).args(args), out)?;
        Ok(())
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.pid != 0 && alive(self.pid)
    }

    /// Waits (20 s at most) until it serves; an error if it exits first.
    pub fn wait(&self, what: &str) -> Result<()> {
        let mut died = false;
        wait_for(what, &self.log, || {
            died = !self.running();
            died || match &self.ready {
                Ready::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
                Ready::Tcp(port) => TcpStream::connect(("127.0.0.1", *port)).is_ok(),
            }
        })?;
        if died {
            bail!(
                "{what} exited:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Kills it (SIGKILL: no goodbye to anyone) and waits until it is gone.
    pub fn kill(&self) {
        if self.running() {
            signal(self.pid, "KILL");
            wait_gone(self.pid, Duration::from_secs(5));
        }
    }

    /// Stops it (SIGTERM) and waits up to `limit`.
    pub fn stop(&self, limit: Duration) {
        if self.running() {
            kill_wait(self.pid, limit);
        }
    }
}
