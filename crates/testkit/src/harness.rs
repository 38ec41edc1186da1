//! Frames through an NF the way the runtime hands them over.

use nf_sdk::{Batch, FRAME_SIZE, MAX_BATCH, NetworkFunction, Packet, Verdict};

/// [`FRAME_SIZE`] (the VF ABI's UMEM frame) as a buffer length.
pub const FRAME: usize = FRAME_SIZE as usize;

/// Runs `frames` through `nf` the way the runtime does: each frame copied into
/// its own [`FRAME_SIZE`] buffer (cut to fit), untagged, in batches of at most
/// [`MAX_BATCH`]. Returns each frame's verdict and its bytes afterwards.
pub fn run(nf: &mut impl NetworkFunction, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
    run_with(frames, |batch| nf.process(batch))
}

/// [`run`] with `process` in place of [`NetworkFunction::process`], for an NF's
/// own entry point that takes the time (`|b| nf.process_at(b, now)`).
pub fn run_with(
    frames: &[Vec<u8>],
    process: impl FnMut(&mut Batch<'_>),
) -> Vec<(Verdict, Vec<u8>)> {
    let untagged: Vec<(&[u8], u16)> = frames.iter().map(|f| (f.as_slice(), 0)).collect();
    run_frames(&untagged, process)
}

/// [`run_with`] for `(frame, vlan)` pairs: `vlan` is the TCI the NIC stripped
/// into the descriptor (0 for none).
pub fn run_tagged_with(
    frames: &[(Vec<u8>, u16)],
    process: impl FnMut(&mut Batch<'_>),
) -> Vec<(Verdict, Vec<u8>)> {
    let tagged: Vec<(&[u8], u16)> = frames
        .iter()
        .map(|(f, vlan)| (f.as_slice(), *vlan))
        .collect();
    run_frames(&tagged, process)
}

fn run_frames(
    frames: &[(&[u8], u16)],
    mut process: impl FnMut(&mut Batch<'_>),
) -> Vec<(Verdict, Vec<u8>)> {
    let mut out = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(MAX_BATCH) {
        let mut umem = vec![[0u8; FRAME]; chunk.len()];
        let mut packets: Vec<Packet<'_>> = umem
            .iter_mut()
            .zip(chunk)
            .map(|(slot, (frame, vlan))| {
                let len = frame.len().min(FRAME);
                slot[..len].copy_from_slice(&frame[..len]);
                Packet::new(slot, len, *vlan)
            })
            .collect();
        let mut batch = Batch::new(&mut packets);
        process(&mut batch);
        out.extend(batch.iter().map(|p| (p.verdict(), p.data().to_vec())));
    }
    out
}
