//! Raw UDP baselines measured in the same run as the stack under test: plain
//! blocking `std::net::UdpSocket`s on loopback, no actors, no codec.

use super::stats::Latencies;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Round trips of `size`-byte datagrams between two sockets on 127.0.0.1,
/// one echo thread; `rounds` measured after `warmup`.
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
pub fn ping_pong(size: usize, warmup: usize, rounds: usize) -> std::io::Result<Latencies> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    let server_addr = server.local_addr()?;
    server.set_read_timeout(Some(Duration::from_millis(200)))?;
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        }
    });
    let msg = vec![0xabu8; size];
    let mut buf = vec![0u8; 65_536];
    let mut lat = Latencies::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t0 = Instant::now();
        client.send_to(&msg, server_addr)?;
        // A lost datagram on loopback is rare; count it as a timeout sample.
        let ok = client.recv_from(&mut buf).is_ok();
        let dt = t0.elapsed();
        if i >= warmup && ok {
            lat.push(dt);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    Ok(lat)
}

/// Result of a raw one-way transfer.
pub struct RawTransfer {
    /// Bytes sent per message.
    pub message_bytes: usize,
    /// Messages sent.
    pub messages: usize,
    /// Bytes that arrived.
    pub bytes_received: u64,
    /// Seconds from the first send to the last byte received.
    pub seconds: f64,
}

impl RawTransfer {
    /// Delivered bytes per second, in MB/s (10^6).
    pub fn mb_per_s(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 0.0;
        }
        self.bytes_received as f64 / self.seconds / 1e6
    }
    /// Share of the bytes sent that arrived.
    pub fn delivered_fraction(&self) -> f64 {
        let sent = (self.message_bytes * self.messages) as f64;
        if sent == 0.0 {
            0.0
        } else {
            self.bytes_received as f64 / sent
        }
    }
}

/// Sends `messages` messages of `message_bytes` each, cut into datagrams of
/// `fragment` bytes, back to back from one socket to another on 127.0.0.1,
/// and measures how fast the bytes arrive. After each message the sender waits
/// for the receiver's one-byte acknowledgement (or 200 ms), as a request/reply
/// caller would; losses are not repaired (this is the no-protocol baseline).
#[allow(clippy::disallowed_methods)] // the benchmark owns the clock
pub fn transfer(
    message_bytes: usize,
    fragment: usize,
    messages: usize,
) -> std::io::Result<RawTransfer> {
    let rx = super::socket_with_buffers("127.0.0.1:0".parse().expect("literal"))?;
    let tx = super::socket_with_buffers("127.0.0.1:0".parse().expect("literal"))?;
    let rx_addr = rx.local_addr()?;
    let tx_addr = tx.local_addr()?;
    rx.set_read_timeout(Some(Duration::from_millis(200)))?;
    tx.set_read_timeout(Some(Duration::from_millis(200)))?;
    let fragments_per_message = message_bytes.div_ceil(fragment).max(1);
    let receiver = std::thread::spawn(move || -> u64 {
        let mut buf = vec![0u8; 65_536];
        let mut total = 0u64;
        for _ in 0..messages {
            let mut got = 0usize;
            let mut frags = 0usize;
            while frags < fragments_per_message {
                match rx.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        got += n;
                        frags += 1;
                    }
                    Err(_) => break, // lost fragments: give up on this message
                }
            }
            total += got as u64;
            let _ = rx.send_to(&[1], tx_addr);
        }
        total
    });
    let data = vec![0x5au8; message_bytes];
    let mut ack = [0u8; 16];
    let t0 = Instant::now();
    for _ in 0..messages {
        for chunk in data.chunks(fragment) {
            tx.send_to(chunk, rx_addr)?;
        }
        let _ = tx.recv_from(&mut ack);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let bytes_received = receiver.join().unwrap_or(0);
    Ok(RawTransfer {
        message_bytes,
        messages,
        bytes_received,
        seconds,
    })
}
