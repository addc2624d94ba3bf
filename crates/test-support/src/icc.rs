//! An ICC profile for tests and benchmarks, built here so no binary
//! fixture is needed. Shared with `benches/` by path.

/// A matrix/TRC ICC v2 display profile with the Display P3 primaries
/// (adapted to D50, as ICC wants) and a 2.2 gamma curve.
pub fn display_p3_like() -> Vec<u8> {
    fn s15(v: f64) -> [u8; 4] {
        ((v * 65536.0).round() as i32).to_be_bytes()
    }
    let xyz =
        |x: f64, y: f64, z: f64| [b"XYZ \0\0\0\0".to_vec(), s15(x).to_vec(), s15(y).to_vec(), s15(z).to_vec()].concat();
    // "curv", reserved, one entry: gamma 2.2 as u8Fixed8 (563/256), padding.
    let gamma = [b"curv\0\0\0\0".as_slice(), &1u32.to_be_bytes(), &563u16.to_be_bytes(), &[0, 0]].concat();
    let tags: [(&[u8; 4], Vec<u8>); 7] = [
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", gamma.clone()),
        (b"gTRC", gamma.clone()),
        (b"bTRC", gamma),
    ];
    let mut table = (tags.len() as u32).to_be_bytes().to_vec();
    let mut data = Vec::new();
    let data_start = 128 + 4 + 12 * tags.len();
    for (signature, body) in &tags {
        table.extend_from_slice(*signature);
        table.extend_from_slice(&((data_start + data.len()) as u32).to_be_bytes());
        table.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(body);
    }
    let mut header = vec![0u8; 128];
    header[0..4].copy_from_slice(&((data_start + data.len()) as u32).to_be_bytes());
    header[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
    header[12..16].copy_from_slice(b"mntr");
    header[16..20].copy_from_slice(b"RGB ");
    header[20..24].copy_from_slice(b"XYZ ");
    header[36..40].copy_from_slice(b"acsp");
    header[68..80].copy_from_slice(&[s15(0.9642), s15(1.0), s15(0.8249)].concat());
    [header, table, data].concat()
}
