use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

const BASE: usize = 64;

fn ring(size: u32, start: u32) -> (Arc<SharedMemory>, Producer, Consumer) {
    let layout = RingLayout::new(BASE, size).expect("layout");
    let shm = Arc::new(SharedMemory::create("ring", BASE + layout.len()).expect("shm"));
    layout.init(&shm, start).expect("init");
    let prod = layout.producer(Arc::clone(&shm)).expect("producer");
    let cons = layout.consumer(Arc::clone(&shm)).expect("consumer");
    (shm, prod, cons)
}

fn poke(shm: &SharedMemory, offset: usize, value: u32) {
    shm.write_at(BASE + offset, &value.to_ne_bytes())
        .expect("poke");
}

fn desc(seq: u64) -> Desc {
    Desc {
        iova: seq,
        len: seq as u32 ^ 0xdead_beef,
        flags: (seq >> 3) as u16,
        vlan: (seq >> 7) as u16,
    }
}

#[test]
fn desc_layout_matches_repr_c() {
    let d = Desc {
        iova: 0x0102_0304_0506_0708,
        len: 0x1112_1314,
        flags: 0x2122,
        vlan: 0x3132,
    };
    let (shm, mut p, _c) = ring(4, 0);
    p.produce(&d).expect("produce");
    let mut raw = [0u8; 16];
    shm.read_at(BASE + DESCS_OFFSET, &mut raw).expect("read");
    let mut expected = Vec::new();
    expected.extend_from_slice(&d.iova.to_ne_bytes());
    expected.extend_from_slice(&d.len.to_ne_bytes());
    expected.extend_from_slice(&d.flags.to_ne_bytes());
    expected.extend_from_slice(&d.vlan.to_ne_bytes());
    assert_eq!(raw.as_slice(), expected.as_slice());
}

#[test]
fn layout_validation() {
    assert_eq!(RingLayout::new(0, 0), Err(RingError::BadSize(0)));
    assert_eq!(RingLayout::new(0, 48), Err(RingError::BadSize(48)));
    assert_eq!(RingLayout::new(32, 64), Err(RingError::Misaligned(32)));
    assert!(RingLayout::new(0, MAX_RING_SIZE).is_ok());
    assert_eq!(RingLayout::bytes_for(64), 192 + 64 * 16);

    let shm = Arc::new(SharedMemory::create("small", 4096).expect("shm"));
    let fits = RingLayout::new(4096 - RingLayout::bytes_for(16), 16).expect("layout");
    assert!(fits.init(&shm, 0).is_ok());
    let too_big = RingLayout::new(4096 - RingLayout::bytes_for(16) + 64, 16).expect("layout");
    assert!(matches!(
        too_big.init(&shm, 0),
        Err(RingError::OutOfBounds { .. })
    ));
    assert!(matches!(
        too_big.producer(Arc::clone(&shm)),
        Err(RingError::OutOfBounds { .. })
    ));
    let huge = RingLayout::new(usize::MAX - 63, 16).expect("layout");
    assert!(matches!(
        huge.consumer(shm),
        Err(RingError::OutOfBounds { .. })
    ));
}

#[test]
fn produce_consume_wraps() {
    let (_shm, mut p, mut c) = ring(4, u32::MAX - 3);
    for round in 0..10u64 {
        for i in 0..4 {
            p.produce(&desc(round * 4 + i)).expect("produce");
        }
        assert_eq!(p.produce(&desc(99)), Err(RingError::Full));
        assert_eq!(c.available(), Ok(4));
        for i in 0..4 {
            assert_eq!(c.consume_one(), Ok(Some(desc(round * 4 + i))));
        }
        assert_eq!(c.consume_one(), Ok(None));
    }
}

#[test]
fn partial_submit_drops_rest_of_reservation() {
    let (_shm, mut p, mut c) = ring(8, 0);
    assert_eq!(p.reserve(5), Ok(5));
    p.write(0, &desc(1));
    p.write(1, &desc(2));
    p.submit(2);
    assert_eq!(p.free(), Ok(6));
    assert_eq!(c.peek(8), Ok(2));
    assert_eq!(c.read(0), desc(1));
    assert_eq!(c.read(1), desc(2));
    c.release(2);
    assert_eq!(p.free(), Ok(8));
}

#[test]
fn need_wakeup_flag() {
    let (shm, p, c) = ring(8, 0);
    assert!(!p.needs_wakeup());
    c.set_need_wakeup();
    assert!(p.needs_wakeup());
    assert!(c.need_wakeup());
    // Garbage in the other flag bits is ignored and preserved.
    poke(&shm, FLAGS_OFFSET, 0xffff_fff0);
    assert!(!p.needs_wakeup());
    c.set_need_wakeup();
    assert!(p.needs_wakeup());
    c.clear_need_wakeup();
    assert!(!p.needs_wakeup());
    let mut raw = [0u8; 4];
    shm.read_at(BASE + FLAGS_OFFSET, &mut raw).expect("read");
    assert_eq!(u32::from_ne_bytes(raw), 0xffff_fff0);
}

#[test]
fn attach_rejects_corrupt_indices() {
    let layout = RingLayout::new(BASE, 8).expect("layout");
    let shm = Arc::new(SharedMemory::create("ring", BASE + layout.len()).expect("shm"));
    layout.init(&shm, 100).expect("init");
    poke(&shm, PRODUCER_OFFSET, 109);
    let jump = RingError::IndexJump {
        producer: 109,
        consumer: 100,
        size: 8,
    };
    assert_eq!(layout.producer(Arc::clone(&shm)).err(), Some(jump.clone()));
    assert_eq!(layout.consumer(Arc::clone(&shm)).err(), Some(jump));
    poke(&shm, PRODUCER_OFFSET, 108);
    assert!(layout.consumer(shm).is_ok());
}

#[test]
fn producer_going_backwards_is_a_jump() {
    let (shm, mut p, mut c) = ring(8, 10);
    for i in 0..4 {
        p.produce(&desc(i)).expect("produce");
    }
    assert_eq!(c.available(), Ok(4));
    poke(&shm, PRODUCER_OFFSET, 12);
    assert_eq!(
        c.available(),
        Err(RingError::IndexJump {
            producer: 12,
            consumer: 10,
            size: 8
        })
    );
    // The consumer keeps its own view: the 4 accepted descriptors are intact.
    assert_eq!(c.peek(4), Ok(4));
    assert_eq!(c.read(3), desc(3));
}

#[test]
fn consumer_overtaking_is_a_jump() {
    let (shm, mut p, _c) = ring(8, u32::MAX);
    p.produce(&desc(0)).expect("produce");
    // Consumer claims two consumed when only one was published.
    poke(&shm, CONSUMER_OFFSET, 1);
    assert_eq!(
        p.free(),
        Err(RingError::IndexJump {
            producer: 0,
            consumer: 1,
            size: 8
        })
    );
    poke(&shm, CONSUMER_OFFSET, 0);
    assert_eq!(p.free(), Ok(8));
    // Stepping back from an accepted value is a jump too.
    poke(&shm, CONSUMER_OFFSET, u32::MAX);
    assert!(matches!(p.free(), Err(RingError::IndexJump { .. })));
}

fn start_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(u32::MAX),
        (u32::MAX - 300)..=u32::MAX,
        0u32..300,
        any::<u32>(),
    ]
}

fn ring_size() -> impl Strategy<Value = u32> {
    (0u32..=6).prop_map(|shift| 1 << shift)
}

proptest! {
    #[test]
    fn prop_fifo_and_accounting(
        size in ring_size(),
        start in start_index(),
        ops in prop::collection::vec((any::<bool>(), 0u32..=70), 0..200),
    ) {
        let (_shm, mut p, mut c) = ring(size, start);
        let mut model: VecDeque<Desc> = VecDeque::new();
        let mut seq = 0u64;
        for (is_produce, n) in ops {
            if is_produce {
                let granted = p.reserve(n).expect("reserve");
                let expected = n.min(size - model.len() as u32);
                prop_assert_eq!(granted, expected);
                for i in 0..granted {
                    let d = desc(seq);
                    seq += 1;
                    p.write(i, &d);
                    model.push_back(d);
                }
                p.submit(granted);
            } else {
                let got = c.peek(n).expect("peek");
                prop_assert_eq!(got, n.min(model.len() as u32));
                for i in 0..got {
                    prop_assert_eq!(Some(c.read(i)), model.pop_front());
                }
                c.release(got);
            }
            let free = p.free().expect("free");
            let available = c.available().expect("available");
            prop_assert!(available <= size);
            prop_assert_eq!(available as usize, model.len());
            prop_assert_eq!(free + available, size);
        }
    }

    #[test]
    fn prop_garbage_producer_index(
        size in ring_size(),
        start in start_index(),
        produced in 0u32..=64,
        garbage in any::<u32>(),
    ) {
        let (shm, mut p, mut c) = ring(size, start);
        let produced = produced.min(size);
        for i in 0..produced {
            p.produce(&desc(u64::from(i))).expect("produce");
        }
        prop_assert_eq!(c.available(), Ok(produced));
        poke(&shm, PRODUCER_OFFSET, garbage);
        let ahead = garbage.wrapping_sub(start);
        let result = c.available();
        if ahead >= produced && ahead <= size {
            prop_assert_eq!(result, Ok(ahead));
            // Whatever is in those slots, reading them stays in bounds.
            let n = c.peek(size).expect("peek");
            for i in 0..n {
                let _ = c.read(i);
            }
            c.release(n);
        } else {
            prop_assert_eq!(result, Err(RingError::IndexJump {
                producer: garbage,
                consumer: start,
                size,
            }));
            prop_assert_eq!(c.peek(produced), Ok(produced));
        }
    }

    #[test]
    fn prop_garbage_consumer_index(
        size in ring_size(),
        start in start_index(),
        produced in 0u32..=64,
        garbage in any::<u32>(),
    ) {
        let (shm, mut p, _c) = ring(size, start);
        let produced = produced.min(size);
        for i in 0..produced {
            p.produce(&desc(u64::from(i))).expect("produce");
        }
        poke(&shm, CONSUMER_OFFSET, garbage);
        let consumed = garbage.wrapping_sub(start);
        let result = p.free();
        if consumed <= produced {
            prop_assert_eq!(result, Ok(size - produced + consumed));
        } else {
            prop_assert_eq!(result, Err(RingError::IndexJump {
                producer: start.wrapping_add(produced),
                consumer: garbage,
                size,
            }));
            // Nothing was adopted: the cached state still grants what was
            // free before, without reloading.
            prop_assert_eq!(p.reserve(size - produced), Ok(size - produced));
        }
    }
}

#[test]
fn two_thread_stress() {
    const COUNT: u64 = 1 << 20;
    let (_shm, mut p, mut c) = ring(256, u32::MAX - 1000);
    let producer = std::thread::spawn(move || {
        let mut seq = 0u64;
        while seq < COUNT {
            let want = (COUNT - seq).min(32) as u32;
            let n = p.reserve(want).expect("reserve");
            if n == 0 {
                std::thread::yield_now();
                continue;
            }
            for i in 0..n {
                p.write(i, &desc(seq));
                seq += 1;
            }
            p.submit(n);
        }
    });
    let mut expected = 0u64;
    while expected < COUNT {
        let n = c.peek(64).expect("peek");
        if n == 0 {
            std::thread::yield_now();
            continue;
        }
        for i in 0..n {
            assert_eq!(c.read(i), desc(expected));
            expected += 1;
        }
        c.release(n);
    }
    producer.join().expect("producer thread");
    assert_eq!(c.available(), Ok(0));
}
