//! The transforms on arbitrary bytes: never a panic, never more than 3x the
//! input, and the same result however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcase::Transform;
use upcase::protocol::reply_to_datagram;
use upcase::transform::{Case, Counter, map_case};

fuzz_target!(|input: (u16, char, &[u8])| {
    let (cut, letter, data) = input;
    let cut = usize::from(cut) % (data.len() + 1);

    for case in [Case::Upper, Case::Lower] {
        let mut whole = Vec::new();
        assert_eq!(map_case(case, data, true, &mut whole), data.len());
        assert!(whole.len() <= 3 * data.len(), "{case:?} grew past 3x");

        // In two pieces, the first not at the end: what it leaves is
        // presented again with the rest.
        let mut split = Vec::new();
        let consumed = map_case(case, &data[..cut], false, &mut split);
        assert!(cut - consumed <= 3, "held back more than a character");
        map_case(case, &data[consumed..], true, &mut split);
        assert_eq!(split, whole, "{case:?} split at {cut}");
    }

    let mut counter = Counter::new(letter);
    counter.feed(&data[..cut]);
    counter.feed(&data[cut..]);
    let mut whole = Counter::new(letter);
    whole.feed(data);
    assert_eq!(counter.count(), whole.count());

    for transform in [
        Transform::Upper,
        Transform::Lower,
        Transform::Echo,
        Transform::Count(letter),
        Transform::Sockperf,
    ] {
        let mut reply = Vec::new();
        reply_to_datagram(transform, data, &mut reply);
        assert!(reply.len() <= 3 * data.len().max(7), "{transform:?}");
    }
});
