//! A small certificate authority for labs and tests: a CA and the server and client
//! certificates it signs, written as PEM files (keys mode 0600). A cluster uses the
//! operator's own PKI; `vrlab` makes one of these for its etcd and agents.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority.
pub struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Writes `text` to `path` with `mode` from the start (no window with a wider one).
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

impl Ca {
    /// A new self-signed CA with common name `cn`.
    pub fn new(cn: &str) -> Result<Ca> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// The CA's certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for common name `cn` and subject alternative names `sans` (DNS
    /// names or IP addresses; none for a client): (certificate, key), PEM.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Result<(String, String)> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`Ca::issue`] written to `dir/NAME.pem` and `dir/NAME.key` (0600).
    pub fn write(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        sans: &[&str],
    ) -> Result<(PathBuf, PathBuf)> {
        let (cert, key) = self.issue(cn, sans)?;
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        write_file(&c, &cert, 0o644)?;
        write_file(&k, &key, 0o600)?;
        Ok((c, k))
    }

    /// The CA's certificate written to `path`.
    pub fn write_ca(&self, path: &Path) -> Result<()> {
        write_file(path, &self.pem, 0o644)
    }
}
