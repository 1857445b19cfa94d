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
        let good = s.all_met;
        lines.push((
            format!("score {:.2}", s.value),
            if good { [0, 140, 0] } else { [200, 0, 0] },
        ));
        for (k, (line, colour)) in lines.iter().enumerate() {
            draw_text(&mut buf, w, cx + 4, cy + img_w + 4 + k * 10, line, *colour);
        }
    }
    RgbImage::new(w as u32, h as u32, buf).save_png(path)
}

/// A line plot of (x, y) points with axis labels, in the same bitmap font.
/// Line plots stacked vertically, one panel per (title, points).
pub fn write_line_plots(path: &Path, panels: &[(&str, Vec<(f64, f64)>)]) -> Result<(), Error> {
    let (w, h) = (640usize, 360usize);
    let mut buf = Vec::with_capacity(w * h * 3 * panels.len());
    for (title, pts) in panels {
        buf.extend(panel(title, pts, w, h));
    }
    RgbImage::new(w as u32, (h * panels.len()) as u32, buf).save_png(path)
}

fn panel(title: &str, pts: &[(f64, f64)], w: usize, h: usize) -> Vec<u8> {
    let m = 48usize;
    let mut buf = vec![255u8; w * h * 3];
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x1, y1) = (
        if x1 > x0 { x1 } else { x0 + 1.0 },
        if y1 > y0 { y1 } else { y0 + 1e-3 },
    );
    let px = |x: f64| m + ((x - x0) / (x1 - x0) * (w - 2 * m) as f64) as usize;
    let py = |y: f64| h - m - ((y - y0) / (y1 - y0) * (h - 2 * m) as f64) as usize;
    let mut dot = |x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            buf[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
        }
    };
    for x in m..w - m {
        dot(x, h - m, [0, 0, 0]);
    }
    for y in m..h - m + 1 {
        dot(m, y, [0, 0, 0]);
    }
    for p in pts.windows(2) {
        let (ax, ay, bx, by) = (
            px(p[0].0) as f64,
            py(p[0].1) as f64,
            px(p[1].0) as f64,
            py(p[1].1) as f64,
        );
        let n = ((bx - ax).abs().max((by - ay).abs()) as usize).max(1);
        for k in 0..=n {
            let f = k as f64 / n as f64;
            dot(
                (ax + f * (bx - ax)) as usize,
                (ay + f * (by - ay)) as usize,
                [200, 30, 30],
            );
        }
    }
    draw_text(&mut buf, w, m, 16, title, [0, 0, 0]);
    draw_text(&mut buf, w, 4, m - 4, &format!("{y1:.3}"), [0, 0, 0]);
    draw_text(&mut buf, w, 4, h - m - 4, &format!("{y0:.3}"), [0, 0, 0]);
    draw_text(&mut buf, w, m, h - m + 8, &format!("{x0}"), [0, 0, 0]);
    let label = format!("{x1}");
    draw_text(
        &mut buf,
        w,
        w - m - 8 * label.len(),
        h - m + 8,
        &label,
        [0, 0, 0],
    );
    buf
}
