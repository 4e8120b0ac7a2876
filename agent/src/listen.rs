//! Where the agent serves its gRPC API: Unix sockets (the default; callers known by their
//! peer credentials) and TCP with mutual TLS. See [`crate::auth`] for what each caller may
//! do.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// One listening address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `HOST:PORT`, served with mutual TLS only.
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!("{s:?}: unix: needs an absolute path"));
            }
            return Ok(Listen::Unix(p.into()));
        }
        s.parse()
            .map(Listen::Tcp)
            .map_err(|_| format!("{s:?}: a listen address is unix:PATH or HOST:PORT"))
    }
}

/// The group a socket is given: a name from /etc/group or a number.
pub fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group").context("/etc/group")?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let (n, _, id) = (f.next()?, f.next()?, f.next()?);
            (n == g).then(|| id.parse().ok()).flatten()
        })
        .with_context(|| format!("group {g:?} is not in /etc/group"))
}

/// Binds a Unix socket at `path` that appears there already with its final mode (0600, or
/// 0660 and group `group`): it is bound inside a fresh directory only the agent can enter,
/// given its mode and group there, then moved into place. An old socket nobody serves any
/// more is replaced; a live one (another agent) or anything that is not a socket is an
/// error.
pub fn bind_unix(path: &Path, group: Option<u32>) -> Result<std::os::unix::net::UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .with_context(|| format!("{}: no directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{}: another process serves this socket", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!("{}: exists and is not a socket", path.display()),
        Err(_) => {}
    }
    let private = dir.join(format!(
        ".{}.{}.bind",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    let staged = private.join("s");
    let bound = (|| -> Result<std::os::unix::net::UnixListener> {
        let l = std::os::unix::net::UnixListener::bind(&staged)
            .with_context(|| format!("binding {}", staged.display()))?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(&staged, None, Some(g))
                .with_context(|| format!("giving {} to group {g}", staged.display()))?;
        }
        std::fs::rename(&staged, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    let l = bound?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The server's TLS files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTls {
    /// The agent's certificate (PEM) for TCP listeners.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The agent's private key (PEM) for TCP listeners.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The CA whose client certificates TCP listeners accept (PEM); every TCP client must
    /// present one.
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// tonic's TLS configuration; an error unless all three files are given and readable.
    pub fn config(&self) -> Result<tonic::transport::ServerTlsConfig> {
        let (Some(cert), Some(key), Some(ca)) =
            (&self.tls_cert, &self.tls_key, &self.tls_client_ca)
        else {
            bail!(
                "a TCP listener is served with mutual TLS only: give --tls-cert, --tls-key and --tls-client-ca (local clients use unix:PATH)"
            );
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "unix:/run/a.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/a.sock".into())
        );
        assert_eq!(
            "127.0.0.1:50051".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:50051".parse().unwrap())
        );
        assert!("unix:rel.sock".parse::<Listen>().is_err());
        assert!("localhost".parse::<Listen>().is_err());
    }

    #[test]
    fn a_socket_appears_with_its_mode_and_replaces_only_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("listen-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("agent.sock");
        let l = bind_unix(&path, None).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // Live: refused.
        assert!(bind_unix(&path, None).is_err());
        drop(l);
        // Stale: replaced, with the group's mode.
        let _l = bind_unix(&path, Some(0)).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        // Nothing left behind but the socket.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")]);
        // Not a socket: left alone.
        let file = dir.join("file");
        std::fs::write(&file, "keep").unwrap();
        assert!(bind_unix(&file, None).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
