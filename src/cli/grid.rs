//! A labelled grid of samples: image, prompt, reasoning and score, in an 8x8 bitmap font.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use unigrpo::{Error, RgbImage};

use super::eval::Scored;

const COLS: usize = 6;
const SCALE: u32 = 8;
const CELL_W: usize = 200;
const TEXT_LINES: usize = 5;

fn draw_text(buf: &mut [u8], width: usize, x0: usize, y0: usize, text: &str, colour: [u8; 3]) {
    for (k, ch) in text.chars().enumerate() {
        let glyph = BASIC_LEGACY
            .get(ch as usize)
            .copied()
            .unwrap_or(BASIC_LEGACY[b'?' as usize]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (x, y) = (x0 + k * 8 + col, y0 + row);
                    let i = (y * width + x) * 3;
                    if i + 2 < buf.len() && x < width {
                        buf[i..i + 3].copy_from_slice(&colour);
                    }
                }
            }
        }
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for w in text.split_whitespace() {
        let last = lines.last_mut().expect("non-empty");
        if !last.is_empty() && last.len() + 1 + w.len() > width {
            lines.push(w.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(w);
        }
    }
    lines
}

pub fn write_grid(path: &Path, items: &[Scored]) -> Result<(), Error> {
    if items.is_empty() {
        return Err(Error::invalid("nothing to put in the grid"));
    }
    let img_w = (items[0].image.width * SCALE) as usize;
    let cell_h = img_w + 8 + TEXT_LINES * 10;
    let rows = items.len().div_ceil(COLS);
    let (w, h) = (COLS * CELL_W, rows * cell_h);
    let mut buf = vec![255u8; w * h * 3];
    let chars = CELL_W / 8 - 1;
    for (n, s) in items.iter().enumerate() {
        let (cx, cy) = ((n % COLS) * CELL_W, (n / COLS) * cell_h);
        let big = s.image.upscale(SCALE);
        let ox = cx + (CELL_W - img_w) / 2;
        for y in 0..img_w {
            for x in 0..img_w {
                let p = big.pixel(x as u32, y as u32);
                let i = ((cy + y) * w + ox + x) * 3;
                buf[i..i + 3].copy_from_slice(&p);
            }
        }
        let mut lines: Vec<(String, [u8; 3])> = wrap(&s.prompt, chars)
            .into_iter()
            .map(|l| (l, [0, 0, 0]))
            .collect();
        lines.extend(
            wrap(&format!("> {}", s.reasoning), chars)
                .into_iter()
                .map(|l| (l, [60, 60, 160])),
        );
        lines.truncate(TEXT_LINES - 1);
        let good = s.score.all_met();
        lines.push((
            format!("score {:.2}", s.score.value()),
            if good { [0, 140, 0] } else { [200, 0, 0] },
        ));
        for (k, (line, colour)) in lines.iter().enumerate() {
            draw_text(&mut buf, w, cx + 4, cy + img_w + 4 + k * 10, line, *colour);
        }
    }
    RgbImage::new(w as u32, h as u32, buf).save_png(path)
}
