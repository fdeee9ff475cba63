//! Reading and writing ISO base media (MP4) boxes: the few primitives the fragmented HLS
//! writer and the fast-start assembler share.

/// Appends a big-endian u16.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian u64.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A box of `kind` around `payload`.
pub fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    put_u32(&mut out, (payload.len() + 8) as u32);
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

/// A full box (version and flags ahead of the payload).
pub fn full(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 4);
    put_u32(&mut p, (u32::from(version) << 24) | (flags & 0x00ff_ffff));
    p.extend_from_slice(payload);
    bx(kind, &p)
}

/// The boxes of a byte range (top level, or a box's children): (type, start of payload, end).
/// Stops at the first box that does not fit the range.
pub fn boxes(data: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut i = from;
    while i + 8 <= to {
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&data[i + 4..i + 8]);
        let (header, size) = match be32(data, i) {
            0 => (8, to - i),
            1 if i + 16 <= to => (16, be64(data, i + 8) as usize),
            s => (8, s as usize),
        };
        if size < header || i.checked_add(size).is_none_or(|end| end > to) {
            break;
        }
        out.push((kind, i + header, i + size));
        i += size;
    }
    out
}

/// The payload range of the first child box of `kind` in `range`.
pub fn child(data: &[u8], range: (usize, usize), kind: &[u8; 4]) -> Option<(usize, usize)> {
    boxes(data, range.0, range.1)
        .into_iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, a, b)| (a, b))
}

/// The big-endian u32 at `at`.
pub fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// The big-endian u64 at `at`.
pub fn be64(d: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[at..at + 8]);
    u64::from_be_bytes(b)
}

/// A box header read from a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// The box type.
    pub kind: [u8; 4],
    /// The size the header states (0: "to the end of the file").
    pub size: u64,
    /// The header's own length (8, or 16 with a 64-bit size).
    pub len: u64,
}

/// The header of the box at `at` in `f`; None where it cannot be read whole.
pub fn header_at(f: &std::fs::File, at: u64) -> Option<Header> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 16];
    f.read_exact_at(&mut h[..8], at).ok()?;
    let kind = [h[4], h[5], h[6], h[7]];
    match be32(&h, 0) {
        1 => {
            f.read_exact_at(&mut h[8..16], at + 8).ok()?;
            Some(Header {
                kind,
                size: be64(&h, 8),
                len: 16,
            })
        }
        s => Some(Header {
            kind,
            size: s as u64,
            len: 8,
        }),
    }
}
