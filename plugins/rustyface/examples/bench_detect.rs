//! The reference for `scripts/bench-faces.sh`: rustface's detector run directly in this process
//! on one image, with the sample manifest's parameters (min face 20, score 2.0, pyramid 0.8,
//! step 4), per image the work the plugin does for one call: decode, grey, detect.
//!
//! ```text
//! cargo run --release -p bkg-plugin-rustyface --example bench_detect -- IMAGE CLIENTS SECONDS
//! ```
//!
//! Each of CLIENTS threads has its own detector and loops for SECONDS; prints one JSON line:
//! images/s over the whole run and the per-image latency's p50/p99 in milliseconds.

use std::time::{Duration, Instant};

const MODEL: &[u8] = include_bytes!("../model/seeta_fd_frontal_v1.0.bin");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, image, clients, seconds] = args.as_slice() else {
        eprintln!("usage: bench_detect IMAGE CLIENTS SECONDS");
        std::process::exit(2);
    };
    let bytes = std::fs::read(image).expect("read the image");
    let clients: usize = clients.parse().expect("CLIENTS is a number");
    let run_for = Duration::from_secs_f64(seconds.parse().expect("SECONDS is a number"));
    let started = Instant::now();
    let per_client: Vec<(Vec<Duration>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let bytes = &bytes;
                s.spawn(move || {
                    let model = rustface::read_model(MODEL).expect("model");
                    let mut detector = rustface::create_detector_with_model(model);
                    detector.set_min_face_size(20);
                    detector.set_score_thresh(2.0);
                    detector.set_pyramid_scale_factor(0.8);
                    detector.set_slide_window_step(4, 4);
                    let mut latencies = Vec::new();
                    let mut faces;
                    // At least one image, so `SECONDS` 0 just reports the face count.
                    loop {
                        let t = Instant::now();
                        let gray = image::load_from_memory(bytes).expect("decode").to_luma8();
                        let (w, h) = gray.dimensions();
                        faces = detector
                            .detect(&rustface::ImageData::new(&gray, w, h))
                            .len();
                        latencies.push(t.elapsed());
                        if started.elapsed() >= run_for {
                            break;
                        }
                    }
                    (latencies, faces)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let faces = per_client.first().map_or(0, |(_, f)| *f);
    let mut all: Vec<Duration> = per_client.into_iter().flat_map(|(l, _)| l).collect();
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len().max(1)) - 1;
        all.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{{\"clients\": {clients}, \"images\": {}, \"seconds\": {elapsed:.2}, \"images_per_s\": {:.2}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"faces\": {faces}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
