//! Numbers and IPv4 addresses written digit by digit, for the lines and headers every request
//! writes: `Display` goes through the formatting machinery, several times dearer.

/// `n` in decimal, appended to `b`.
pub fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[i..]);
}

/// `ip` in dotted decimal, as `Display` writes it: the buffer and how much of it is used.
pub fn ipv4(ip: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    (buf, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            65535,
            1_000_000,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(b, n.to_string().as_bytes());
        }
        for a in 0..=255u8 {
            for ip in [
                [a, 0, 9, 10],
                [10, a, 99, 100],
                [255, 1, a, 0],
                [1, 2, 3, a],
            ] {
                let ip = std::net::Ipv4Addr::from(ip);
                let (buf, n) = ipv4(ip);
                assert_eq!(&buf[..n], ip.to_string().as_bytes());
            }
        }
    }
}
