//! An open-loop load generator for `POST /get-online-features`: requests are sent on a fixed
//! schedule (the target rate, spread over keep-alive connections). A request that had to wait
//! for the previous answer on its connection is timed from when it was *due*, so a slow server
//! cannot hide its queueing (no coordinated omission); one sent on time is timed from its send,
//! so the timer's 1 ms granularity is not charged to the server. wrk measures peak throughput;
//! this measures latency at a chosen rate.
//!
//! Usage: loadgen ADDR RATE DURATION_S [CONNECTIONS=8] [ENTITIES=1] [FEATURES=3] [KEYS=10000]
//! Prints one JSON line: target rate, achieved rate, p50/p99/p99.9 in µs, errors (and of them,
//! `io_errors`: connections that failed; the rest are answers other than 200).

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn request(rng: &mut Rng, entities: usize, features: usize, keys: u64) -> Vec<u8> {
    let refs: Vec<String> = (0..features).map(|i| format!("\"bench:f{i}\"")).collect();
    let ids: Vec<String> = (0..entities)
        .map(|_| (rng.next() % keys + 1).to_string())
        .collect();
    let body = format!(
        "{{\"features\":[{}],\"entities\":{{\"driver_id\":[{}]}}}}",
        refs.join(","),
        ids.join(",")
    );
    format!(
        "POST /get-online-features HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response; returns its status.
async fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<u16> {
    line.clear();
    r.read_line(line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok(status)
}

async fn connection(
    addr: String,
    interval: Duration,
    offset: Duration,
    until: Instant,
    shape: (usize, usize, u64),
    seed: u64,
) -> (Vec<u32>, u64, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut io_errors = 0;
    let Ok(stream) = TcpStream::connect(&addr).await else {
        return (latencies, 1, 1);
    };
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    let mut rng = Rng(seed | 1);
    let mut line = String::new();
    let start = Instant::now() + offset;
    let mut prev_done = Instant::now();
    for i in 0u32.. {
        let due = start + interval * i;
        // Past the end, whether by schedule or because a rate above the server's peak left the
        // schedule behind (then what was achieved is the peak).
        if due >= until || Instant::now() >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let from = if prev_done > due { due } else { Instant::now() };
        let req = request(&mut rng, shape.0, shape.1, shape.2);
        if stream.get_mut().write_all(&req).await.is_err() {
            errors += 1;
            io_errors += 1;
            break;
        }
        match read_response(&mut stream, &mut line).await {
            Ok(200) => {
                prev_done = Instant::now();
                latencies.push(from.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(_) => errors += 1,
            Err(_) => {
                errors += 1;
                io_errors += 1;
                break;
            }
        }
    }
    (latencies, errors, io_errors)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .ok_or("usage: loadgen ADDR RATE DURATION_S [CONNECTIONS] [ENTITIES] [FEATURES] [KEYS]")?
        .clone();
    let rate: f64 = arg(&args, 2, 1000.0);
    let seconds: f64 = arg(&args, 3, 10.0);
    let conns: usize = arg(&args, 4, 8);
    let shape = (
        arg(&args, 5, 1usize),
        arg(&args, 6, 3usize),
        arg(&args, 7, 10_000u64),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let interval = Duration::from_secs_f64(conns as f64 / rate);
        let began = Instant::now();
        let until = began + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let offset = interval.mul_f64(c as f64 / conns as f64);
                tokio::spawn(connection(addr.clone(), interval, offset, until, shape, 0x9e37_79b9 + c as u64))
            })
            .collect();
        let mut all = Vec::new();
        let (mut errors, mut io_errors) = (0, 0);
        for t in tasks {
            let (l, e, io) = t.await.unwrap_or_default();
            all.extend(l);
            errors += e;
            io_errors += io;
        }
        let elapsed = began.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| all.get(((all.len() as f64 * p / 100.0) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
        println!(
            "{{\"target_rps\": {rate:.0}, \"rps\": {:.1}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"errors\": {errors}, \"io_errors\": {io_errors}}}",
            all.len() as f64 / elapsed,
            pct(50.0),
            pct(99.0),
            pct(99.9)
        );
    });
    Ok(())
}
