//! The thumbnail hot path: decode (with shrink-on-load) + resize + encode of
//! one phone-sized JPEG (untagged, and tagged Display P3, which adds the
//! conversion to sRGB) and one PNG, single-threaded, as one worker does it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use test_support::bench::{phone_jpeg, phone_jpeg_display_p3, rgba_png};
use thumbnailer::{OutputFormat, ThumbnailConfig, make_thumbnail};

fn resize(c: &mut Criterion) {
    let spec = ThumbnailConfig::default().spec;
    let mut group = c.benchmark_group("thumbnail");
    for (name, bytes, format) in [
        ("jpeg_12mp", phone_jpeg(), OutputFormat::Jpeg),
        ("jpeg_12mp_display_p3", phone_jpeg_display_p3(), OutputFormat::Jpeg),
        ("png_3mp_rgba", rgba_png(), OutputFormat::Png),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| b.iter(|| make_thumbnail(&bytes, format, &spec).expect("thumbnail")));
    }
    group.finish();
}

criterion_group!(benches, resize);
criterion_main!(benches);
