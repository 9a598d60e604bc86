//! TCP option walking: one iterator ([`walk`]) over a segment's option list that yields
//! each option's kind and byte ranges, so every reader of options shares one reading of
//! the list's layout (RFC 9293 §3.1: kind 0 ends the list, kind 1 is one byte of padding,
//! every other option is kind, length, data; the length counts all three).
//!
//! Its users: the parser (MSS, window scale, SACK-permitted, timestamps into
//! [`super::TcpOptions`]), the shield's SYN proxy (timestamps and SACK blocks rewritten in
//! place, [`crate::shield::emit::find_tcp_option`]) and the FTP helper's SACK adjustment
//! ([`crate::director::ftp::seqadj`]). Each decides what a malformed list means for it
//! (an invalid packet, an option not found, a dropped packet).
//!
//! Not here: writing options (the SYN-ACK templates of [`crate::shield::emit`] and
//! [`super::builder`]).

use std::ops::Range;

/// Option kinds (the IANA "TCP Option Kind Numbers" the pipeline reads or writes).
pub mod kind {
    /// End of the option list.
    pub const END: u8 = 0;
    /// No-operation (one byte of padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps (TSval, TSecr).
    pub const TIMESTAMPS: u8 = 8;
}

/// Length (kind, length byte and data) of the MSS option.
pub const MSS_LEN: usize = 4;
/// Length of the window-scale option.
pub const WINDOW_SCALE_LEN: usize = 3;
/// Length of the SACK-permitted option.
pub const SACK_PERMITTED_LEN: usize = 2;
/// Length of the timestamps option.
pub const TIMESTAMPS_LEN: usize = 10;
/// Length of one SACK block (left and right edge).
pub const SACK_BLOCK_LEN: usize = 8;

/// One option of a list: its kind and where its bytes are (positions in the buffer that
/// was walked: a frame, a TCP header or the option list itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOption {
    /// Kind (see [`kind`]).
    pub kind: u8,
    /// Position of the kind byte.
    pub start: usize,
    /// Length, as its length byte says (at least 2).
    pub len: usize,
}

impl TcpOption {
    /// The whole option: kind, length byte and data.
    #[inline]
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// Its data (after the kind and length bytes).
    #[inline]
    pub fn data(&self) -> Range<usize> {
        self.start + 2..self.start + self.len
    }

    /// TSval, the sender's timestamp (of a timestamps option of [`TIMESTAMPS_LEN`]).
    #[inline]
    pub fn tsval(&self) -> Range<usize> {
        self.start + 2..self.start + 6
    }

    /// TSecr, the echoed timestamp (of a timestamps option of [`TIMESTAMPS_LEN`]).
    #[inline]
    pub fn tsecr(&self) -> Range<usize> {
        self.start + 6..self.start + 10
    }

    /// The SACK blocks' edges (of a SACK option), in order: left edge then right edge of
    /// each whole block, 4 bytes each; a partial block at the end is left out.
    pub fn sack_edges(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let first = self.start + 2;
        let edges = (self.len - 2) / SACK_BLOCK_LEN * 2;
        (0..edges).map(move |edge| first + edge * 4..first + edge * 4 + 4)
    }
}

/// An option list that cannot be walked past `at`: an option without its length byte, or
/// whose length is below 2 or runs past the end of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedOption {
    /// Position of the malformed option's kind byte.
    pub at: usize,
}

/// The options of the list at `list` within `bytes` (a list running past `bytes` is cut at
/// its end). Padding (NOP) is skipped; the walk ends at an end-of-list option, at the end
/// of the list, or after yielding a [`MalformedOption`].
#[inline]
pub fn walk(bytes: &[u8], list: Range<usize>) -> Walk<'_> {
    Walk {
        bytes: &bytes[..list.end.min(bytes.len())],
        at: list.start,
    }
}

/// The first well-formed option of `kind` before the list ends or turns malformed.
#[inline]
pub fn find(bytes: &[u8], list: Range<usize>, kind: u8) -> Option<TcpOption> {
    walk(bytes, list)
        .map_while(Result::ok)
        .find(|option| option.kind == kind)
}

/// The iterator of [`walk`].
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    /// The walked buffer, cut at the end of the list.
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for Walk<'_> {
    type Item = Result<TcpOption, MalformedOption>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = self.at;
            let &option_kind = self.bytes.get(start)?;
            match option_kind {
                kind::END => {
                    self.at = self.bytes.len();
                    return None;
                }
                kind::NOP => self.at = start + 1,
                _ => {
                    let len = self.bytes.get(start + 1).map(|&l| usize::from(l));
                    return Some(match len {
                        Some(len) if len >= 2 && len <= self.bytes.len() - start => {
                            self.at = start + len;
                            Ok(TcpOption {
                                kind: option_kind,
                                start,
                                len,
                            })
                        }
                        _ => {
                            self.at = self.bytes.len();
                            Err(MalformedOption { at: start })
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(bytes: &[u8]) -> Vec<Result<(u8, Range<usize>), usize>> {
        walk(bytes, 0..bytes.len())
            .map(|o| o.map(|o| (o.kind, o.range())).map_err(|e| e.at))
            .collect()
    }

    #[test]
    fn walks_a_syn_option_list_with_padding_and_stops_at_end_of_list() {
        let list = [
            2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 9, 9,
        ];
        assert_eq!(
            kinds(&list),
            [
                Ok((2, 0..4)),
                Ok((3, 5..8)),
                Ok((4, 8..10)),
                Ok((8, 10..20))
            ]
        );
        let ts = find(&list, 0..list.len(), kind::TIMESTAMPS).unwrap();
        assert_eq!(
            (&list[ts.tsval()], &list[ts.tsecr()]),
            (&[0, 0, 0, 1][..], &[0, 0, 0, 2][..])
        );
    }

    #[test]
    fn a_malformed_option_ends_the_walk_with_its_position() {
        assert_eq!(kinds(&[1, 9]), [Err(1)], "no length byte");
        assert_eq!(kinds(&[9, 1, 2, 4, 0, 0]), [Err(0)], "length below 2");
        assert_eq!(
            kinds(&[2, 4, 5, 0xb4, 30, 6, 0]),
            [Ok((2, 0..4)), Err(4)],
            "past the end"
        );
        assert_eq!(
            find(&[30, 2, 2, 9], 0..4, kind::MSS),
            None,
            "not read past the error"
        );
    }

    #[test]
    fn positions_are_in_the_walked_buffer_and_the_list_is_cut_at_its_end() {
        let frame = [
            0xee, 0xee, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
        ];
        let sack = find(&frame, 2..frame.len(), kind::SACK).unwrap();
        let edges: Vec<_> = sack.sack_edges().collect();
        assert_eq!(edges, [4..8, 8..12, 12..16, 16..20]);
        assert_eq!(
            walk(&frame, 2..3).next(),
            Some(Err(MalformedOption { at: 2 }))
        );
        assert_eq!(
            walk(&frame, 2..40).count(),
            1,
            "a list past the buffer is cut at its end"
        );
    }
}
