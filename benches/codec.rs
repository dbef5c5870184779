//! The frame codec's throughput: encode into a reused buffer, decode from a
//! stream buffer holding many frames (what a server does with a full read).
//!
//!   cargo bench --bench codec

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use proto::wire::{frame, Frame, FrameCodec};
use tokio_util::codec::Decoder;

fn codec(c: &mut Criterion) {
    for size in [64usize, 32 * 1024] {
        let payload = Bytes::from(vec![b'a'; size]);
        let request = Frame::request(7, 1_234_567, payload.clone());
        let wire_len = request.encoded_len();

        let mut group = c.benchmark_group(format!("frame {size} B"));
        group.throughput(Throughput::Bytes(wire_len as u64));
        let mut out = Vec::with_capacity(wire_len);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                black_box(&request).encode(&mut out).unwrap();
                black_box(out.len())
            })
        });
        let bytes = request.to_bytes().unwrap();
        group.bench_function("decode_datagram", |b| {
            b.iter(|| frame::decode_datagram(black_box(&bytes)).unwrap())
        });
        group.bench_function("check_header", |b| {
            b.iter(|| frame::check_header(black_box(&bytes)).unwrap())
        });
        group.finish();

        // 64 frames back to back, as one read from a pipelining client.
        let mut stream = Vec::new();
        for i in 0..64 {
            Frame::request(i, 0, payload.clone())
                .encode(&mut stream)
                .unwrap();
        }
        let mut group = c.benchmark_group(format!("stream of 64 frames of {size} B"));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function("FrameCodec::decode", |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&stream[..]);
                let mut n = 0;
                while let Some(f) = FrameCodec.decode(&mut buf).unwrap() {
                    n += f.payload.len();
                }
                black_box(n)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
