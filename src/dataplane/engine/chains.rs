//! Chain installation: the switch's steering for a chain's hops and, for `shared`
//! isolation, one IOMMU domain over a host-owned UMEM (ARCHITECTURE.md §4).

use super::{ChainEgress, Engine, EngineError, Isolation};
use crate::dataplane::port::FRAME_SIZE;
use crate::dataplane::shared_umem::SharedUmem;
use crate::nic::iommu::DomainId;
use crate::nic::{Perms, Region, VfId, VlanTag};

impl Engine {
    /// Programs the switch (and, for `shared`, one IOMMU domain) for a chain: wire
    /// frames matching `classifier` → hop 1 → … → last hop → wire, as `egress` says.
    /// For [`ChainEgress::TwoWay`] wire frames of the egress VLAN enter hop 1 too, and
    /// each frame leaves on the side opposite to its source's. Hops get spoof check
    /// off, since NFs in a chain legitimately rewrite addresses, and the classifier's
    /// VLAN as their port VLAN. Call before the hops' NFs attach. On an error the
    /// hops' steering is removed again: nothing is left half-installed.
    pub fn install_chain(
        &mut self,
        hops: &[VfId],
        isolation: Isolation,
        classifier: crate::nic::WireMatch,
        egress: ChainEgress,
    ) -> Result<(), EngineError> {
        let (Some(first), Some(last)) = (hops.first(), hops.last()) else {
            return Ok(());
        };
        let (last_rule, return_match) = match egress {
            ChainEgress::OneWay(retag) => (crate::nic::TxSteer::ToWire(retag), None),
            ChainEgress::TwoWay(back) => {
                let a = match classifier {
                    crate::nic::WireMatch {
                        vlan: Some(vid @ 1..=4094),
                        dst: None,
                    } if vid != back.vid => VlanTag { vid, pcp: 0 },
                    _ => return Err(EngineError::TwoWayClassifier { classifier, back }),
                };
                let return_match = crate::nic::WireMatch {
                    vlan: Some(back.vid),
                    dst: None,
                };
                (
                    crate::nic::TxSteer::ToWireTwoWay { a, b: back },
                    Some(return_match),
                )
            }
        };
        // What the hops had, to put back if any step is refused.
        let before: Vec<(VfId, u16, bool)> = hops
            .iter()
            .filter_map(|hop| {
                let a = self.nic.vf(*hop).ok()?.admin();
                Some((*hop, a.vlan, a.spoof_check))
            })
            .collect();
        let mut result = self.steer_chain(hops, *first, *last, classifier, return_match, last_rule);
        if result.is_ok() && isolation == Isolation::Shared {
            result = self
                .nic
                .vf(*first)
                .map(|v| v.admin().rx_ring.min(v.admin().tx_ring) / 2)
                .map_err(EngineError::from)
                .and_then(|frames| self.share_chain(hops, frames).map(|_| ()));
        }
        if result.is_err() {
            for (hop, vlan, spoof_check) in before {
                self.nic.unsteer(hop);
                let restore = crate::nic::VfUpdate {
                    vlan: Some(vlan),
                    spoof_check: Some(spoof_check),
                    ..Default::default()
                };
                let _ = self.nic.update_vf(hop, &restore);
            }
        }
        result
    }

    fn steer_chain(
        &mut self,
        hops: &[VfId],
        first: VfId,
        last: VfId,
        classifier: crate::nic::WireMatch,
        return_match: Option<crate::nic::WireMatch>,
        last_rule: crate::nic::TxSteer,
    ) -> Result<(), EngineError> {
        // A VLAN classifier becomes every hop's port VLAN: the NIC strips the tag on
        // the way into each NF and inserts it on the way out, so NFs see untagged
        // frames and VLAN anti-spoof holds. A hop must not forward tagged frames
        // otherwise (it is not trusted). In a two-way chain the return direction
        // travels under the same nominal VLAN inside the chain; the first hop's port
        // VLAN strips its tag just the same, and the last hop re-tags by source.
        let port_vlan = classifier.vlan.filter(|v| *v != 0);
        let hop_config = crate::nic::VfUpdate {
            spoof_check: Some(false),
            vlan: port_vlan,
            ..Default::default()
        };
        for hop in hops {
            self.nic.update_vf(*hop, &hop_config)?;
        }
        self.nic.steer_wire(classifier, first)?;
        if let Some(m) = return_match {
            self.nic.steer_wire(m, first)?;
        }
        for pair in hops.windows(2) {
            self.nic
                .steer_tx(pair[0], crate::nic::TxSteer::ToVf(pair[1]))?;
        }
        self.nic.steer_tx(last, last_rule)?;
        Ok(())
    }

    /// Puts `hops` into one shared IOMMU domain backed by a UMEM the host owns,
    /// `frames_per_hop` frames each (ARCHITECTURE.md §4, `shared` isolation). Must be called
    /// before the hops' NFs attach.
    pub fn share_chain(
        &mut self,
        hops: &[VfId],
        frames_per_hop: u32,
    ) -> Result<DomainId, EngineError> {
        let domain = self.nic.share_domain(hops)?;
        let umem = SharedUmem::new(hops, frames_per_hop, FRAME_SIZE)?;
        let region = self.add_region(umem.memory().clone());
        let len = umem.memory().len() as u64;
        let mapped = self.nic.map_domain(
            domain,
            umem.iova(),
            len,
            Region { id: region, len },
            0,
            Perms::RW,
        );
        if let Err(e) = mapped {
            self.regions[region.0 as usize] = None;
            return Err(e.into());
        }
        if let Some(slot) = self.regions[region.0 as usize].as_mut() {
            slot.mappings = 1;
        }
        self.umems.insert(domain, umem);
        Ok(domain)
    }

    /// Takes the chain over `hops` down: each hop released (its NF detached, the VF
    /// unassigned), unsteered, and back to power-on switching config (VLAN 0, spoof
    /// check on) for its next owner.
    pub fn remove_chain(&mut self, hops: &[VfId]) {
        for vf in hops {
            // A hop whose NF never started is not assigned: nothing to release.
            let _ = self.release(*vf);
            self.nic.unsteer(*vf);
            let power_on = crate::nic::VfUpdate {
                vlan: Some(0),
                spoof_check: Some(true),
                ..Default::default()
            };
            let _ = self.nic.update_vf(*vf, &power_on);
        }
    }
}
