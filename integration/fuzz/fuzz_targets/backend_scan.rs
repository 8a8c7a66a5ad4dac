//! The backend scanner the relay forwards server bytes with: any bytes,
//! fed in two pieces split where the input says, with every frame kept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pglittle::protocol::scan::{BackendScanner, Segment};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut scanner = BackendScanner::new();
    let mut buf = rest[..cut].to_vec();
    let mut segs = Vec::new();
    for more in [&rest[cut..], &[][..]] {
        segs.clear();
        let Ok(n) = scanner.scan(&buf, &mut segs, |_, _| true) else {
            return;
        };
        assert!(n <= buf.len());
        for seg in &segs {
            if let Segment::Range(a, b) = *seg {
                assert!(a <= b && b <= n);
            }
        }
        buf.drain(..n);
        buf.extend_from_slice(more);
    }
});
