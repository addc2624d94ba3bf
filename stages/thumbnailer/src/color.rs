//! Colour management: thumbnails are sRGB. An original carrying an RGB ICC
//! profile (Display P3 from phones, Adobe RGB from cameras) has its
//! thumbnail converted from that profile to sRGB, so it looks the same in a
//! browser that ignores profiles and the vision model sees true colours.
//! Other profiles (grey, CMYK) and profiles that do not parse are ignored,
//! as browsers ignore them: the pixels are taken as sRGB.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;

use qcms::{DataType, Intent, Profile, Transform};

use crate::pixels::Pixels;

/// The output profile, with its inverse curves computed once.
static SRGB: LazyLock<Box<Profile>> = LazyLock::new(|| {
    let mut srgb = Profile::new_sRGB();
    srgb.precache_output_transform();
    srgb
});

/// The colour space an ICC profile declares (header bytes 16–19).
fn color_space(icc: &[u8]) -> Option<&[u8]> {
    icc.get(16..20)
}

/// Converts RGB or RGBA `pixels` described by `icc` to sRGB in place (alpha
/// is left alone). Returns whether it did.
pub fn to_srgb(pixels: &mut Pixels, icc: &[u8]) -> bool {
    let data_type = match pixels.channels {
        3 => DataType::RGB8,
        4 => DataType::RGBA8,
        _ => return false,
    };
    if color_space(icc) != Some(b"RGB ") {
        return false;
    }
    // qcms is Firefox's, fuzzed against hostile profiles; a panic in it
    // still must not take the batch down.
    catch_unwind(AssertUnwindSafe(|| {
        let Some(input) = Profile::new_from_slice(icc, false) else { return false };
        let Some(transform) = Transform::new(&input, &SRGB, data_type, Intent::Perceptual) else { return false };
        transform.apply(&mut pixels.data);
        true
    }))
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_spaces_and_unreadable_profiles_leave_pixels_alone() {
        let original = Pixels::new(2, 1, 3, vec![10, 20, 30, 40, 50, 60]);
        let mut cmyk = [0u8; 132];
        cmyk[16..20].copy_from_slice(b"CMYK");
        let mut not_a_profile = vec![0xAB; 300];
        not_a_profile[16..20].copy_from_slice(b"RGB ");
        for icc in [&cmyk[..], &not_a_profile[..], b"short"] {
            let mut pixels = original.clone();
            assert!(!to_srgb(&mut pixels, icc));
            assert_eq!(pixels, original);
        }
        let mut grey = Pixels::new(2, 1, 1, vec![10, 20]);
        assert!(!to_srgb(&mut grey, &not_a_profile));
    }
}
