//! The part of a diff's comparison beyond the outcomes' text: an ICMP error's quoted bytes
//! and a fragmented datagram's fragments (see the `diff` module documentation), and how a
//! disagreement on them reads.

use std::fmt::Write as _;

use crate::kernel::outcome::Outcome;

/// Beyond the outcome's text: an ICMP error's quoted bytes and a fragmented datagram's
/// fragments must be the same on both sides.
pub(super) fn same_wire(sim: &Outcome, kernel: &Outcome) -> bool {
    match (frame_of(sim), frame_of(kernel)) {
        (Some(a), Some(b)) => a.quote == b.quote && a.fragments == b.fragments,
        _ => true,
    }
}

fn frame_of(outcome: &Outcome) -> Option<&crate::kernel::outcome::FrameSummary> {
    match outcome {
        Outcome::Forward { frame } | Outcome::Answer { frame } | Outcome::Proxy { frame } => {
            Some(frame)
        }
        _ => None,
    }
}

/// The outcomes' texts for a disagreement report, each with the part of the wire
/// comparison ([`same_wire`]) that differs: where the quotes part and what each side
/// quoted from there, or the fragments each side sent.
pub(super) fn disagreement_texts(sim: &Outcome, kernel: &Outcome) -> (String, String) {
    let (mut ours, mut theirs) = (sim.text(), kernel.text());
    let (Some(a), Some(b)) = (frame_of(sim), frame_of(kernel)) else {
        return (ours, theirs);
    };
    if a.quote != b.quote {
        let (qa, qb) = (
            a.quote.as_deref().unwrap_or(""),
            b.quote.as_deref().unwrap_or(""),
        );
        let at = qa
            .as_bytes()
            .chunks(2)
            .zip(qb.as_bytes().chunks(2))
            .take_while(|(x, y)| x == y)
            .count();
        let from = |q: &str| {
            let tail = q.get(2 * at..).unwrap_or("");
            tail.get(..16).unwrap_or(tail).to_string()
        };
        let _ = write!(
            ours,
            ", quoting {} bytes (from byte {at}: {})",
            qa.len() / 2,
            from(qa)
        );
        let _ = write!(
            theirs,
            ", quoting {} bytes (from byte {at}: {})",
            qb.len() / 2,
            from(qb)
        );
    }
    if a.fragments != b.fragments {
        let list = |f: &[crate::kernel::outcome::FragmentShape]| {
            f.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(ours, " in fragments [{}]", list(&a.fragments));
        let _ = write!(theirs, " in fragments [{}]", list(&b.fragments));
    }
    (ours, theirs)
}

#[cfg(test)]
mod tests {
    use super::super::agrees;
    use super::super::tests::forward;
    use super::*;
    use crate::kernel::outcome::FrameSummary;
    use crate::kernel::rules::BackendMatch;
    use datapath::packet::LinkType;
    use datapath::packet::builder::PacketBuilder;
    use std::net::Ipv4Addr;

    #[test]
    fn icmp_errors_agree_on_their_quote_and_forwards_on_their_fragments() {
        let error = |ttl: u8| {
            let offending = PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(10, 9, 9, 9), Ipv4Addr::new(10, 0, 2, 1))
                .ttl(ttl)
                .udp(1000, 53)
                .build();
            let frame = PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 9, 9, 9))
                .icmp(11, 0)
                .payload(&offending[14..])
                .build();
            Outcome::Answer {
                frame: FrameSummary::of(LinkType::Ethernet, &frame),
            }
        };
        let (quoted_1, quoted_0) = (error(1), error(0));
        assert!(agrees(&quoted_1, &error(1), None));
        assert_eq!(quoted_1.text(), quoted_0.text());
        assert!(
            !agrees(&quoted_1, &quoted_0, None),
            "the quoted TTL differs"
        );
        let (ours, theirs) = disagreement_texts(&quoted_1, &quoted_0);
        assert!(ours.contains("from byte 8: 01"), "{ours}");
        assert!(theirs.contains("from byte 8: 00"), "{theirs}");
        let whole = forward([10, 0, 2, 1]);
        let mut cut = whole.clone();
        if let Outcome::Forward { frame } = &mut cut {
            frame.fragments = vec![crate::kernel::outcome::FragmentShape {
                offset: 0,
                length: 1396,
                more: true,
                df: false,
            }];
        }
        assert!(!agrees(&whole, &cut, Some(BackendMatch::Exact)));
        assert!(!agrees(&whole, &cut, Some(BackendMatch::StandIn)));
    }
}
