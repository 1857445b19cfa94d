//! RGB8 images and PNG output.

use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB8, `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), (width * height * 3) as usize);
        RgbImage {
            width,
            height,
            data,
        }
    }
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
    /// Write a PNG atomically (encoded in memory, then `write_atomic`: a unique temporary
    /// file, synced, renamed; removed when anything fails).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut bytes),
            &self.data,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                format!("cannot encode {}: {e}", path.display()),
            )
        })?;
        crate::train::write_atomic(path, &bytes)
    }
    pub fn load_png(path: &Path) -> Result<RgbImage> {
        let img = image::open(path)
            .map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::Io,
                    format!("cannot read image {}: {e}", path.display()),
                )
            })?
            .to_rgb8();
        Ok(RgbImage::new(img.width(), img.height(), img.into_raw()))
    }
    /// Nearest-neighbour upscale by an integer factor.
    pub fn upscale(&self, k: u32) -> RgbImage {
        let (w, h) = (self.width * k, self.height * k);
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&self.pixel(x / k, y / k));
            }
        }
        RgbImage::new(w, h, data)
    }
}
