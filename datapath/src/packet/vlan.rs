//! IEEE 802.1Q / 802.1ad VLAN tags, in smoltcp's checked-view style (smoltcp has none).
//!
//! A tag sits where an EtherType would be: TPID (0x8100 C-tag, 0x88a8 S-tag, 0x9100 legacy
//! QinQ) is the EtherType that announced it; the 4 bytes here are TCI (PCP 3 bits, DEI 1 bit,
//! VID 12 bits) followed by the next EtherType.

use smoltcp::wire::EthernetProtocol;

/// 802.1Q customer tag TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag TPID.
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ TPID used by some switches.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;

/// Length of one tag after its TPID.
pub const TAG_LEN: usize = 4;

/// True when `ethertype` announces a VLAN tag.
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD | TPID_QINQ_LEGACY)
}

/// The tag was shorter than [`TAG_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// A read/write view of one VLAN tag (TCI + inner EtherType).
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wrap without checking the length; accessors panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap, checking that the buffer holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < TAG_LEN {
            Err(Truncated)
        } else {
            Ok(Self { buffer })
        }
    }

    /// The tag control information word.
    pub fn tci(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// VLAN id (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The EtherType that follows the tag.
    pub fn ethertype(&self) -> EthernetProtocol {
        EthernetProtocol::from(self.raw_ethertype())
    }

    /// The EtherType that follows the tag, as a number.
    pub fn raw_ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The bytes after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Set the TCI from its parts.
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        self.buffer.as_mut()[0..2].copy_from_slice(&tci.to_be_bytes());
    }

    /// Set the inner EtherType.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&ethertype.to_be_bytes());
    }
}

/// High-level description of one tag, for building test frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRepr {
    /// Priority.
    pub pcp: u8,
    /// Drop eligible.
    pub dei: bool,
    /// VLAN id.
    pub vid: u16,
    /// EtherType after the tag.
    pub ethertype: u16,
}

impl VlanRepr {
    /// Read a tag.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Self {
        Self {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.raw_ethertype(),
        }
    }

    /// Write the tag into a view.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        tag.set_tci(self.pcp, self.dei, self.vid);
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fields() {
        let repr = VlanRepr {
            pcp: 5,
            dei: true,
            vid: 0xabc,
            ethertype: 0x0800,
        };
        let mut buf = [0u8; 4];
        repr.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0xba, 0xbc, 0x08, 0x00]);
        let tag = VlanTag::new_checked(&buf[..]).unwrap();
        assert_eq!(VlanRepr::parse(&tag), repr);
        assert_eq!(tag.ethertype(), EthernetProtocol::Ipv4);
    }

    #[test]
    fn short_tag_is_rejected() {
        assert_eq!(VlanTag::new_checked(&[0u8; 3][..]).unwrap_err(), Truncated);
        assert!(is_vlan_tpid(0x88a8) && is_vlan_tpid(0x8100) && !is_vlan_tpid(0x0800));
    }
}
