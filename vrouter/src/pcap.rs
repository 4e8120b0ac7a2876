//! Reading and writing classic pcap files (Ethernet link type): test inputs, captured
//! outputs, demo traffic. Written here because it is two fixed headers; a reader that
//! meets a malformed file returns an error, never panics.

use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame we write or accept.
pub const SNAPLEN: u32 = 65_535;

/// Writes `frames` as a pcap file (microsecond timestamps 1 µs apart).
pub fn write(path: impl AsRef<Path>, frames: &[Vec<u8>]) -> io::Result<()> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| f.len() + 16).sum::<usize>());
    for v in [MAGIC_US.to_le_bytes(), [2, 0, 4, 0]] {
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(&[0u8; 8]); // thiszone, sigfigs
    out.extend_from_slice(&SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = u32::try_from(f.len())
            .ok()
            .filter(|l| *l <= SNAPLEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("frame {i} is {} bytes, over {SNAPLEN}", f.len()),
                )
            })?;
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::File::create(path)?.write_all(&out)
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Reads every frame of a pcap file (either byte order, µs or ns timestamps).
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<Vec<u8>>> {
    let mut b = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut b)?;
    parse(&b)
}

/// Parses pcap bytes.
pub fn parse(b: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let hdr: &[u8; 24] = b
        .get(..24)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("shorter than a pcap header"))?;
    let magic = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let le = match magic {
        MAGIC_US | MAGIC_NS => true,
        m if m.swap_bytes() == MAGIC_US || m.swap_bytes() == MAGIC_NS => false,
        _ => return Err(bad("not a pcap file (bad magic)")),
    };
    let u32_at = |s: &[u8], at: usize| -> u32 {
        let w = [s[at], s[at + 1], s[at + 2], s[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    if u32_at(hdr, 20) != LINKTYPE_ETHERNET {
        return Err(bad(format!(
            "link type {} is not Ethernet",
            u32_at(hdr, 20)
        )));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let rec = b
            .get(at..at + 16)
            .ok_or_else(|| bad(format!("truncated record header at byte {at}")))?;
        let caplen = u32_at(rec, 8) as usize;
        if caplen > SNAPLEN as usize {
            return Err(bad(format!("record at byte {at} claims {caplen} bytes")));
        }
        let data = b
            .get(at + 16..at + 16 + caplen)
            .ok_or_else(|| bad(format!("truncated record at byte {at}")))?;
        frames.push(data.to_vec());
        at += 16 + caplen;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_files() {
        let dir = std::env::temp_dir().join(format!("vr-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pcap");
        let frames = vec![vec![1u8; 60], vec![2u8; 1514], vec![]];
        write(&p, &frames).unwrap();
        assert_eq!(read(&p).unwrap(), frames);
        let bytes = std::fs::read(&p).unwrap();
        assert!(parse(&bytes[..20]).is_err());
        assert!(
            parse(&bytes[..bytes.len() - 1]).is_err(),
            "truncated last record"
        );
        let mut wrong = bytes.clone();
        wrong[0] = 0;
        assert!(parse(&wrong).is_err());
        let mut huge = bytes.clone();
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
