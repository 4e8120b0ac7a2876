//! The control socket's framing under a slow writer: the stream is the fuzz input, cut
//! into pieces whose sizes the input's first bytes choose, each piece followed by a read
//! that times out. The frames read must be exactly those read from the whole stream at
//! once, in order, and nothing panics.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use vrouter::control::{FrameReader, Polled, read_frame};

/// Hands out the stream in pieces, a timeout between each.
struct Slow<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
    timed_out: bool,
}

impl Read for Slow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.timed_out && !self.data.is_empty() {
            self.timed_out = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.timed_out = false;
        let size = usize::from(self.sizes.get(self.turn % self.sizes.len().max(1)).copied().unwrap_or(1)).max(1);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|b: &[u8]| {
    let (sizes, data) = b.split_at(b.len().min(8));
    let mut whole = data;
    let mut expected = Vec::new();
    let end = loop {
        match read_frame(&mut whole) {
            Ok(Some(f)) => expected.push(f),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.kind()),
        }
    };
    let mut slow = Slow { data, sizes, turn: 0, timed_out: false };
    let mut r = FrameReader::default();
    let mut got = Vec::new();
    let slow_end = loop {
        match r.poll(&mut slow) {
            Ok(Polled::Frame(f)) => got.push(f),
            Ok(Polled::Pending) => {}
            Ok(Polled::Closed) => break Ok(()),
            Err(e) => break Err(e.kind()),
        }
    };
    assert_eq!(got, expected);
    assert_eq!(slow_end, end);
});
