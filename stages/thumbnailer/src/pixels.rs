//! Decoded pixels and what is done to them between decoder and encoder:
//! box reduction while decoding, Lanczos resampling, EXIF orientation, and
//! flattening transparency.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// An 8-bit image: 1 channel (grey), 3 (RGB) or 4 (RGBA, straight alpha).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

/// The size of an image of `width`×`height` fitted within `max`×`max`, aspect
/// kept, never upscaled, never below one pixel.
pub fn fit_within(width: u32, height: u32, max: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max {
        return (width, height);
    }
    let scale = f64::from(max) / f64::from(longest);
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).clamp(1, max);
    (side(width), side(height))
}

impl Pixels {
    pub fn new(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), width as usize * height as usize * usize::from(channels));
        Self { width, height, channels, data }
    }

    fn pixel_type(&self) -> PixelType {
        match self.channels {
            1 => PixelType::U8,
            3 => PixelType::U8x3,
            _ => PixelType::U8x4,
        }
    }

    /// Resamples to exactly `width`×`height` with a Lanczos3 filter (SIMD;
    /// alpha is premultiplied for the duration, so edges do not go dark).
    pub fn resize(self, width: u32, height: u32) -> Result<Self, String> {
        if (width, height) == (self.width, self.height) {
            return Ok(self);
        }
        let pixel_type = self.pixel_type();
        let channels = self.channels;
        let src = Image::from_vec_u8(self.width, self.height, self.data, pixel_type).map_err(|e| e.to_string())?;
        let mut dst = Image::new(width, height, pixel_type);
        Resizer::new()
            .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)))
            .map_err(|e| e.to_string())?;
        Ok(Self::new(width, height, channels, dst.into_vec()))
    }

    /// Applies an EXIF orientation (1–8), so the pixels stand as the camera meant.
    pub fn orient(self, orientation: u16) -> Self {
        if !(2..=8).contains(&orientation) {
            return self;
        }
        let (w, h, c) = (self.width as usize, self.height as usize, usize::from(self.channels));
        let transposed = orientation >= 5;
        let (out_w, out_h) = if transposed { (h, w) } else { (w, h) };
        let mut out = vec![0u8; self.data.len()];
        for y in 0..out_h {
            for x in 0..out_w {
                // Where in the stored image the displayed pixel (x, y) comes from.
                let (sx, sy) = match orientation {
                    2 => (w - 1 - x, y),
                    3 => (w - 1 - x, h - 1 - y),
                    4 => (x, h - 1 - y),
                    5 => (y, x),
                    6 => (y, h - 1 - x),
                    7 => (w - 1 - y, h - 1 - x),
                    _ => (w - 1 - y, x),
                };
                let from = (sy * w + sx) * c;
                let to = (y * out_w + x) * c;
                out[to..to + c].copy_from_slice(&self.data[from..from + c]);
            }
        }
        Self::new(out_w as u32, out_h as u32, self.channels, out)
    }

    /// RGBA composited over white as RGB; other images unchanged.
    pub fn flatten(self) -> Self {
        if self.channels != 4 {
            return self;
        }
        let data = self
            .data
            .chunks_exact(4)
            .flat_map(|p| {
                let a = u32::from(p[3]);
                [0, 1, 2].map(|i| ((u32::from(p[i]) * a + 255 * (255 - a) + 127) / 255) as u8)
            })
            .collect();
        Self::new(self.width, self.height, 3, data)
    }
}

/// Averages `factor`×`factor` blocks of rows as they are decoded, so a large
/// image never exists in memory at full size: only one row of sums and the
/// reduced output do.
#[derive(Debug)]
pub struct BoxReducer {
    width: usize,
    channels: usize,
    factor: usize,
    out_width: usize,
    sums: Vec<u32>,
    rows_in_block: usize,
    out: Vec<u8>,
}

impl BoxReducer {
    pub fn new(width: u32, channels: u8, factor: u32) -> Self {
        let (width, channels, factor) = (width as usize, usize::from(channels), factor.max(1) as usize);
        let out_width = width.div_ceil(factor);
        Self {
            width,
            channels,
            factor,
            out_width,
            sums: vec![0; out_width * channels],
            rows_in_block: 0,
            out: Vec::new(),
        }
    }

    /// The output height for an input of `height` rows.
    pub fn out_height(height: u32, factor: u32) -> u32 {
        height.div_ceil(factor.max(1))
    }

    pub fn push_row(&mut self, row: &[u8]) {
        let c = self.channels;
        if self.factor == 1 {
            self.out.extend_from_slice(&row[..self.width * c]);
            return;
        }
        for (x, px) in row[..self.width * c].chunks_exact(c).enumerate() {
            let sum = &mut self.sums[(x / self.factor) * c..][..c];
            for (s, v) in sum.iter_mut().zip(px) {
                *s += u32::from(*v);
            }
        }
        self.rows_in_block += 1;
        if self.rows_in_block == self.factor {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let c = self.channels;
        for bx in 0..self.out_width {
            let cols = (self.width - bx * self.factor).min(self.factor);
            let n = (cols * self.rows_in_block) as u32;
            for s in &self.sums[bx * c..(bx + 1) * c] {
                self.out.push(((s + n / 2) / n) as u8);
            }
        }
        self.sums.iter_mut().for_each(|s| *s = 0);
        self.rows_in_block = 0;
    }

    pub fn finish(mut self) -> Pixels {
        if self.rows_in_block > 0 {
            self.emit();
        }
        let height = self.out.len() / (self.out_width * self.channels).max(1);
        Pixels::new(self.out_width as u32, height as u32, self.channels as u8, self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_within_the_box_without_upscaling() {
        assert_eq!(fit_within(4032, 3024, 800), (800, 600));
        assert_eq!(fit_within(3024, 4032, 800), (600, 800));
        assert_eq!(fit_within(640, 480, 800), (640, 480));
        assert_eq!(fit_within(10000, 10, 800), (800, 1));
        assert_eq!(fit_within(801, 801, 800), (800, 800));
    }

    /// A 3×2 RGB image whose pixel values name their position: 10·x + y.
    fn labelled() -> Pixels {
        let data = (0..2).flat_map(|y| (0..3).flat_map(move |x| [10 * x + y; 3])).collect();
        Pixels::new(3, 2, 3, data)
    }

    fn at(p: &Pixels, x: u32, y: u32) -> u8 {
        p.data[((y * p.width + x) * 3) as usize]
    }

    #[test]
    fn orientation_six_turns_a_landscape_into_a_portrait_clockwise() {
        let p = labelled().orient(6);
        assert_eq!((p.width, p.height), (2, 3));
        // Rotating 90° clockwise: the bottom-left stored pixel lands top-left.
        assert_eq!(at(&p, 0, 0), 1);
        assert_eq!(at(&p, 1, 0), 0);
        assert_eq!(at(&p, 1, 2), 20);
    }

    #[test]
    fn every_orientation_is_a_permutation_and_eight_undoes_six() {
        for o in 1..=8 {
            let mut data = labelled().orient(o).data;
            data.sort();
            let mut expected = labelled().data;
            expected.sort();
            assert_eq!(data, expected, "orientation {o}");
        }
        assert_eq!(labelled().orient(6).orient(8), labelled());
        assert_eq!(labelled().orient(3).orient(3), labelled());
    }

    #[test]
    fn box_reducer_averages_blocks_including_ragged_edges() {
        let mut r = BoxReducer::new(3, 1, 2);
        r.push_row(&[0, 10, 100]);
        r.push_row(&[20, 30, 200]);
        r.push_row(&[50, 70, 9]);
        let p = r.finish();
        assert_eq!((p.width, p.height), (2, 2));
        assert_eq!(p.data, vec![15, 150, 60, 9]);
        assert_eq!(BoxReducer::out_height(3, 2), 2);
    }

    #[test]
    fn flatten_composites_over_white() {
        let p = Pixels::new(2, 1, 4, vec![255, 0, 0, 255, 0, 0, 0, 0]).flatten();
        assert_eq!(p.data, vec![255, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn resize_keeps_a_flat_colour_flat() {
        let p = Pixels::new(100, 50, 3, [200u8, 100, 50].repeat(5000)).resize(40, 20).unwrap();
        assert_eq!((p.width, p.height), (40, 20));
        assert!(p.data.chunks_exact(3).all(|px| px == [200, 100, 50]));
    }
}
