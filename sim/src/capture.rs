//! Streaming capture reader: pcap (both byte orders, µs and ns), pcapng (several interfaces
//! and link types in one file) and gzip-compressed files of either.
//!
//! The format is detected by magic number, never by extension. Memory is bounded by the
//! largest record (a packet is at most [`MAX_CAPLEN`] bytes, a pcapng block at most
//! [`MAX_BLOCK_LEN`]), whatever the file size. A truncated or corrupt file yields a
//! [`CaptureError`] naming the file, the packet index and the byte offset, after every earlier
//! packet has been returned. Parsing of the records themselves is pcap-file's; lengths are
//! checked here first so that no header is trusted with an allocation.
//!
//! Not here: packet decoding (that is [`datapath::packet::parse`]) and writing captures.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use datapath::packet::LinkType;
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{PcapError, TsResolution};

/// Largest captured length accepted for one packet (libpcap's `MAXIMUM_SNAPLEN`).
pub const MAX_CAPLEN: u32 = 262_144;
/// Largest pcapng block accepted (a packet of [`MAX_CAPLEN`] plus generous options).
pub const MAX_BLOCK_LEN: u32 = MAX_CAPLEN + 64 * 1024;
/// Bytes read from the file at a time.
const READ_CHUNK: usize = 256 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

/// Capture container format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

/// One packet read from a capture, borrowing the reader's buffer.
#[derive(Debug)]
pub struct CapturedPacket<'a> {
    /// 0-based index within the file (counting packets only, not other pcapng blocks).
    pub index: u64,
    /// Timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the interface the packet was captured on.
    pub link: LinkType,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
    /// Original length on the wire.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: &'a [u8],
    /// Byte offset of the record in the (decompressed) stream.
    pub offset: u64,
}

/// What went wrong, without the location.
#[derive(Debug, thiserror::Error)]
pub enum CaptureErrorKind {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a capture file.
    #[error("not a pcap or pcapng file (first bytes {0:02x?})")]
    UnknownFormat(Vec<u8>),
    /// The file ends in the middle of a header or record.
    #[error("file ends inside a record ({have} of {need} bytes present)")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the record needs (at least).
        need: usize,
    },
    /// A record claims more captured bytes than any capture can hold.
    #[error("captured length {0} exceeds the maximum of {MAX_CAPLEN}")]
    CaplenTooLarge(u32),
    /// A pcapng block claims an impossible length.
    #[error("block length {0} is not a multiple of 4 or exceeds {MAX_BLOCK_LEN}")]
    BadBlockLength(u32),
    /// A pcapng packet names an interface that was never described.
    #[error("packet refers to interface {0}, which has no interface description block")]
    UnknownInterface(u32),
    /// The record's contents are corrupt.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A capture error with its location: file, packet index and byte offset.
#[derive(Debug)]
pub struct CaptureError {
    /// The file.
    pub path: PathBuf,
    /// Index of the packet that could not be read (packets before it were returned).
    pub packet_index: Option<u64>,
    /// Byte offset of the bad record (in the decompressed stream for gzip files).
    pub offset: u64,
    /// What went wrong.
    pub kind: CaptureErrorKind,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(index) = self.packet_index {
            write!(f, "packet {index} ")?;
        }
        write!(f, "at byte offset {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

/// Per-interface facts from pcapng interface description blocks.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_sec: u64,
}

enum Parser {
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        interfaces: Vec<Interface>,
        little_endian: bool,
    },
}

/// Streaming reader over one capture file.
pub struct CaptureReader {
    path: PathBuf,
    source: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    eof: bool,
    parser: Parser,
    next_index: u64,
    gzip: bool,
}

impl fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("format", &self.format())
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl CaptureReader {
    /// Open a capture file, detecting gzip, pcap and pcapng by magic number.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| error_at(&path, None, 0, e.into()))?;
        Self::from_reader(path, Box::new(file))
    }

    /// Read a capture from any byte source; `path` is used in error messages.
    pub fn from_reader(
        path: PathBuf,
        mut source: Box<dyn Read + Send>,
    ) -> Result<Self, CaptureError> {
        let mut head = Vec::with_capacity(READ_CHUNK);
        fill(&mut source, &mut head, 2).map_err(|e| error_at(&path, None, 0, e.into()))?;
        let gzip = head.starts_with(&GZIP_MAGIC);
        if gzip {
            let compressed = io::Cursor::new(head).chain(source);
            source = Box::new(flate2::read::MultiGzDecoder::new(compressed));
            head = Vec::with_capacity(READ_CHUNK);
        }
        fill(&mut source, &mut head, 64).map_err(|e| error_at(&path, None, 0, e.into()))?;
        let mut reader = Self {
            path,
            source,
            buf: head,
            start: 0,
            base: 0,
            eof: false,
            parser: Parser::Pcap {
                parser: placeholder_pcap_parser(),
                link: LinkType::Ethernet,
                nanos: false,
            },
            next_index: 0,
            gzip,
        };
        reader.parser = reader.open_parser()?;
        Ok(reader)
    }

    /// The container format.
    pub fn format(&self) -> Format {
        match self.parser {
            Parser::Pcap { .. } => Format::Pcap,
            Parser::PcapNg { .. } => Format::PcapNg,
        }
    }

    /// Whether the file was gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// Bytes of buffer currently allocated: bounded by the largest record plus one read
    /// chunk, whatever the file size.
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_parser(&mut self) -> Result<Parser, CaptureError> {
        let magic = self.buf.get(..4).map(|m| [m[0], m[1], m[2], m[3]]);
        let Some(magic) = magic else {
            let kind = CaptureErrorKind::UnknownFormat(self.buf.clone());
            return Err(self.error(None, kind));
        };
        match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => self.open_pcap(),
            PCAPNG_SHB => self.open_pcapng(),
            _ => Err(self.error(None, CaptureErrorKind::UnknownFormat(magic.to_vec()))),
        }
    }

    fn open_pcap(&mut self) -> Result<Parser, CaptureError> {
        self.need(24, None)?;
        let (rest, parser) =
            PcapParser::new(&self.buf[self.start..]).map_err(|e| self.error(None, corrupt(e)))?;
        let consumed = self.buf.len() - self.start - rest.len();
        self.start += consumed;
        let header = parser.header();
        let link = LinkType::from_linktype(u32::from(header.datalink));
        let nanos = header.ts_resolution == TsResolution::NanoSecond;
        Ok(Parser::Pcap {
            parser,
            link,
            nanos,
        })
    }

    fn open_pcapng(&mut self) -> Result<Parser, CaptureError> {
        let len = self.peek_block_len(None)?;
        self.need(len, None)?;
        let (rest, parser) =
            PcapNgParser::new(&self.buf[self.start..]).map_err(|e| self.error(None, corrupt(e)))?;
        let consumed = self.buf.len() - self.start - rest.len();
        self.start += consumed;
        let little_endian = self.buf[8..12] == PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes();
        Ok(Parser::PcapNg {
            parser,
            interfaces: Vec::new(),
            little_endian,
        })
    }

    /// The next packet, `Ok(None)` at the clean end of the file.
    pub fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureError> {
        match self.parser {
            Parser::Pcap { .. } => self.next_pcap(),
            Parser::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureError> {
        let index = Some(self.next_index);
        if !self.need(16, index)? {
            return Ok(None);
        }
        let Parser::Pcap {
            parser,
            link,
            nanos,
        } = &self.parser
        else {
            unreachable!()
        };
        let (link, nanos) = (*link, *nanos);
        let little = parser.header().endianness == pcap_file::Endianness::Little;
        let header = &self.buf[self.start..self.start + 16];
        let incl_len = read_u32(&header[8..12], little);
        if incl_len > MAX_CAPLEN {
            return Err(self.error(index, CaptureErrorKind::CaplenTooLarge(incl_len)));
        }
        self.need(16 + incl_len as usize, index)?;
        let Parser::Pcap { parser, .. } = &self.parser else {
            unreachable!()
        };
        let (_, raw) = parser
            .next_raw_packet(&self.buf[self.start..])
            .map_err(|e| self.error(index, corrupt(e)))?;
        let frac = u64::from(raw.ts_frac) * if nanos { 1 } else { 1_000 };
        let ts_ns = u64::from(raw.ts_sec) * 1_000_000_000 + frac;
        let orig_len = raw.orig_len.max(raw.incl_len);
        Ok(Some(self.emit_packet(
            ts_ns,
            link,
            0,
            orig_len,
            16,
            incl_len as usize,
        )))
    }

    /// Consume a record of `header + len` bytes and return its packet view.
    fn emit_packet(
        &mut self,
        ts_ns: u64,
        link: LinkType,
        interface: u32,
        orig_len: u32,
        data_at: usize,
        len: usize,
    ) -> CapturedPacket<'_> {
        self.emit_block(ts_ns, link, interface, orig_len, data_at, len, 16 + len)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_block(
        &mut self,
        ts_ns: u64,
        link: LinkType,
        interface: u32,
        orig_len: u32,
        data_at: usize,
        len: usize,
        record_len: usize,
    ) -> CapturedPacket<'_> {
        let record = self.start;
        self.start += record_len;
        let index = self.next_index;
        self.next_index += 1;
        CapturedPacket {
            index,
            ts_ns,
            link,
            interface,
            orig_len,
            data: &self.buf[record + data_at..record + data_at + len],
            offset: self.base + record as u64,
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureError> {
        loop {
            let index = Some(self.next_index);
            if !self.need(12, index)? {
                return Ok(None);
            }
            let len = self.peek_block_len(index)?;
            self.need(len, index)?;
            if let Some(packet) = self.pcapng_block(len)? {
                return Ok(Some(self.emit_block(
                    packet.ts_ns,
                    packet.link,
                    packet.interface,
                    packet.orig_len,
                    packet.data_at,
                    packet.data_len,
                    len,
                )));
            }
        }
    }

    /// Parse the block at `start` (whole, `len` bytes). Non-packet blocks are consumed here;
    /// for a packet block the location of its data is returned and nothing is consumed.
    fn pcapng_block(&mut self, len: usize) -> Result<Option<NgPacket>, CaptureError> {
        let index = Some(self.next_index);
        let block_start = self.start;
        let Parser::PcapNg {
            parser,
            interfaces,
            little_endian,
        } = &mut self.parser
        else {
            unreachable!()
        };
        let slice = &self.buf[block_start..block_start + len];
        let parsed = parser.next_block(slice);
        let block = match parsed {
            Ok((_, block)) => block,
            Err(e) => {
                let kind = corrupt(e);
                return Err(self.error(index, kind));
            }
        };
        let packet = match block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                *little_endian = slice[8..12] == PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes();
                None
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(interface_of(&idb));
                None
            }
            Block::EnhancedPacket(epb) => {
                let interface = epb.interface_id;
                let Some(iface) = interfaces.get(interface as usize).copied() else {
                    let kind = CaptureErrorKind::UnknownInterface(interface);
                    return Err(self.error(index, kind));
                };
                let raw_units = epb.timestamp.as_nanos() as u64;
                Some(NgPacket {
                    ts_ns: iface.timestamp_ns(raw_units),
                    link: iface.link,
                    interface,
                    orig_len: epb.original_len.max(epb.data.len() as u32),
                    data_at: 28,
                    data_len: epb.data.len(),
                })
            }
            Block::SimplePacket(spb) => {
                let Some(iface) = interfaces.first().copied() else {
                    return Err(self.error(index, CaptureErrorKind::UnknownInterface(0)));
                };
                let data_len = (len - 16).min(spb.original_len as usize);
                Some(NgPacket {
                    ts_ns: 0,
                    link: iface.link,
                    interface: 0,
                    orig_len: spb.original_len,
                    data_at: 12,
                    data_len,
                })
            }
            Block::Packet(pb) => {
                let interface = u32::from(pb.interface_id);
                let Some(iface) = interfaces.get(interface as usize).copied() else {
                    return Err(self.error(index, CaptureErrorKind::UnknownInterface(interface)));
                };
                Some(NgPacket {
                    ts_ns: iface.timestamp_ns(pb.timestamp),
                    link: iface.link,
                    interface,
                    orig_len: pb.original_len.max(pb.data.len() as u32),
                    data_at: 28,
                    data_len: pb.data.len(),
                })
            }
            _ => None,
        };
        if let Some(packet) = &packet {
            if packet.data_len > MAX_CAPLEN as usize {
                let kind = CaptureErrorKind::CaplenTooLarge(packet.data_len as u32);
                return Err(self.error(index, kind));
            }
        } else {
            self.start += len;
        }
        Ok(packet)
    }

    /// Length of the pcapng block at `start` (header must be buffered), checked.
    fn peek_block_len(&mut self, index: Option<u64>) -> Result<usize, CaptureError> {
        self.need(12, index)?;
        let at = self.start;
        let block_type = read_u32(&self.buf[at..at + 4], true);
        let little = if block_type == PCAPNG_SHB {
            self.buf[at + 8..at + 12] == PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes()
        } else {
            match &self.parser {
                Parser::PcapNg { little_endian, .. } => *little_endian,
                Parser::Pcap { .. } => true,
            }
        };
        let len = read_u32(&self.buf[at + 4..at + 8], little);
        if !len.is_multiple_of(4) || !(12..=MAX_BLOCK_LEN).contains(&len) {
            return Err(self.error(index, CaptureErrorKind::BadBlockLength(len)));
        }
        Ok(len as usize)
    }

    /// Make sure `n` unconsumed bytes are buffered. `Ok(false)` when the stream ended
    /// cleanly before any of them; a truncation error when it ended part-way.
    fn need(&mut self, n: usize, index: Option<u64>) -> Result<bool, CaptureError> {
        while self.buf.len() - self.start < n && !self.eof {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.base += self.start as u64;
                self.start = 0;
            }
            let want = n.max(READ_CHUNK);
            let before = self.buf.len();
            let got = read_some(&mut self.source, &mut self.buf, want)
                .map_err(|e| self.error(index, e.into()))?;
            if got == 0 {
                self.eof = true;
            }
            debug_assert_eq!(self.buf.len(), before + got);
        }
        let have = self.buf.len() - self.start;
        if have >= n {
            Ok(true)
        } else if have == 0 {
            Ok(false)
        } else {
            Err(self.error(index, CaptureErrorKind::Truncated { have, need: n }))
        }
    }

    fn error(&self, packet_index: Option<u64>, kind: CaptureErrorKind) -> CaptureError {
        error_at(
            &self.path,
            packet_index,
            self.base + self.start as u64,
            kind,
        )
    }
}

struct NgPacket {
    ts_ns: u64,
    link: LinkType,
    interface: u32,
    orig_len: u32,
    data_at: usize,
    data_len: usize,
}

impl Interface {
    fn timestamp_ns(&self, units: u64) -> u64 {
        let seconds = units / self.units_per_sec + self.offset_sec;
        let fraction = units % self.units_per_sec;
        let fraction_ns =
            (u128::from(fraction) * 1_000_000_000 / u128::from(self.units_per_sec)) as u64;
        seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(fraction_ns)
    }
}

fn interface_of(
    idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock,
) -> Interface {
    let mut units_per_sec = 1_000_000u64;
    let mut offset_sec = 0;
    for option in &idb.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(resol) => {
                let exponent = u32::from(resol & 0x7f);
                units_per_sec = if resol & 0x80 != 0 {
                    2u64.checked_pow(exponent).unwrap_or(u64::MAX)
                } else {
                    10u64.checked_pow(exponent).unwrap_or(u64::MAX)
                };
            }
            InterfaceDescriptionOption::IfTsOffset(offset) => offset_sec = *offset,
            _ => {}
        }
    }
    Interface {
        link: LinkType::from_linktype(u32::from(idb.linktype)),
        units_per_sec: units_per_sec.max(1),
        offset_sec,
    }
}

/// A parser value that is replaced before use (the real one needs the buffered header).
fn placeholder_pcap_parser() -> PcapParser {
    const HEADER: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0,
    ];
    match PcapParser::new(&HEADER) {
        Ok((_, parser)) => parser,
        Err(_) => unreachable!("the built-in pcap header is valid"),
    }
}

fn read_u32(bytes: &[u8], little: bool) -> u32 {
    let b = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    }
}

fn corrupt(error: PcapError) -> CaptureErrorKind {
    match error {
        PcapError::IoError(e) => CaptureErrorKind::Io(e),
        PcapError::IncompleteBuffer => {
            CaptureErrorKind::Corrupt("record shorter than its length".into())
        }
        other => CaptureErrorKind::Corrupt(other.to_string()),
    }
}

fn error_at(
    path: &Path,
    packet_index: Option<u64>,
    offset: u64,
    kind: CaptureErrorKind,
) -> CaptureError {
    CaptureError {
        path: path.to_path_buf(),
        packet_index,
        offset,
        kind,
    }
}

/// Read until `buf` holds at least `min` bytes or the stream ends.
fn fill(source: &mut dyn Read, buf: &mut Vec<u8>, min: usize) -> io::Result<()> {
    while buf.len() < min {
        if read_some(source, buf, READ_CHUNK)? == 0 {
            break;
        }
    }
    Ok(())
}

/// Append up to `want` bytes from `source` to `buf`; returns how many were read.
fn read_some(source: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    let before = buf.len();
    buf.resize(before + want, 0);
    let result = loop {
        match source.read(&mut buf[before..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    let got = *result.as_ref().unwrap_or(&0);
    buf.truncate(before + got);
    result
}
