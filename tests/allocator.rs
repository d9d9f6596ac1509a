//! The gateway's allocator (the vendored `mimalloc` wrapper, which serves alignments up to 16
//! with mimalloc's plain calls) hands out memory aligned as asked, zeroed when asked, and keeps
//! contents across a reallocation, for every alignment from 1 to 4096 and sizes on both sides of
//! mimalloc's small, medium and power-of-two size classes.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether `p` is on a boundary of its type's alignment.
fn aligned<T>(p: *const T) -> bool {
    (p as usize).is_multiple_of(std::mem::align_of::<T>())
}

macro_rules! aligned {
    ($($name:ident = $align:literal),* $(,)?) => {
        $(
            #[derive(Clone, Copy)]
            #[repr(C, align($align))]
            struct $name(u8);
        )*
        fn every_alignment(count: usize) {
            $(
                let mut v: Vec<$name> = Vec::with_capacity(count);
                assert!(aligned(v.as_ptr()), "{count} elements of alignment {}", $align);
                for i in 0..count {
                    v.push($name(i as u8));
                }
                // Growing reallocates: the new block must be aligned and keep what was written.
                v.reserve(count * 3 + 7);
                assert!(aligned(v.as_ptr()), "grown from {count}, alignment {}", $align);
                assert!(v.iter().enumerate().all(|(i, x)| x.0 == i as u8));
                let b = Box::new($name(7));
                assert!(aligned(&*b as *const $name));
            )*
        }
    };
}

aligned!(
    A1 = 1,
    A2 = 2,
    A4 = 4,
    A8 = 8,
    A16 = 16,
    A32 = 32,
    A64 = 64,
    A128 = 128,
    A4096 = 4096
);

/// Element counts that put the allocations below, at and above mimalloc's small limit (1 KiB),
/// on power-of-two and other size classes, and into its large pages.
const COUNTS: &[usize] = &[
    1, 2, 3, 7, 16, 24, 100, 1000, 1024, 1500, 3000, 4096, 9240, 70_000,
];

#[test]
fn every_alignment_and_size_is_honoured() {
    for &n in COUNTS {
        every_alignment(n);
    }
}

#[test]
fn zeroed_memory_is_zero_and_aligned() {
    for &n in COUNTS {
        // `vec![0; n]` asks the allocator for zeroed memory; u128 needs 16-byte alignment.
        let wide = vec![0u128; n];
        assert!(aligned(wide.as_ptr()));
        assert!(wide.iter().all(|&x| x == 0));
        let bytes = vec![0u8; n * 13];
        assert!(bytes.iter().all(|&x| x == 0));
    }
}
