//! Image analysis for the shapes reward: palette segmentation, connected components, shape class
//! by template overlap, centroid.

use super::grammar::{Colour, Shape, COLOURS, SHAPES};
use crate::image::RgbImage;

/// A connected region of one palette colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub colour: Colour,
    pub shape: Shape,
    pub pixels: usize,
    /// Centre of the bounding box in pixel units (image spans 0..width): the renderer places
    /// objects by their boxes, and a box centre does not depend on the shape's mass.
    pub cx: f64,
    pub cy: f64,
    /// Bounding box: left, top, width, height in pixels.
    pub bbox: [usize; 4],
}

/// Components smaller than this are noise.
pub const MIN_PIXELS: usize = 3;
/// A pixel farther than this (Euclidean RGB) from every colour counts as background.
const MAX_COLOUR_DISTANCE: i32 = 110;

fn classify_pixel(p: [u8; 3]) -> Option<usize> {
    let d = |c: [u8; 3]| -> i32 { (0..3).map(|k| (p[k] as i32 - c[k] as i32).pow(2)).sum() };
    let bg = d([0, 0, 0]);
    let (best, dist) = COLOURS
        .iter()
        .enumerate()
        .map(|(i, c)| (i, d(c.rgb())))
        .min_by_key(|&(_, v)| v)
        .expect("palette");
    (dist < bg && dist <= MAX_COLOUR_DISTANCE * MAX_COLOUR_DISTANCE).then_some(best)
}

/// Whether pixel (x, y) of a w x h box lies in the template of `shape` (as rendered by the tooling).
fn in_template(shape: Shape, x: usize, y: usize, w: usize, h: usize) -> bool {
    let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
    let (w, h) = (w as f64, h as f64);
    match shape {
        Shape::Square => true,
        Shape::Circle => {
            let (dx, dy) = ((px - w / 2.0) / (w / 2.0), (py - h / 2.0) / (h / 2.0));
            dx * dx + dy * dy <= 1.0 + 1e-9
        }
        Shape::Triangle => (px - w / 2.0).abs() <= py / h * (w / 2.0) + 1e-6,
    }
}

/// Segment `img` into components of palette colours.
pub fn components(img: &RgbImage) -> Vec<Component> {
    segment(img).into_iter().map(|(c, _)| c).collect()
}

/// Components with their pixel indices.
fn segment(img: &RgbImage) -> Vec<(Component, Vec<usize>)> {
    let (w, h) = (img.width as usize, img.height as usize);
    let labels: Vec<Option<usize>> = (0..w * h)
        .map(|i| classify_pixel([img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2]]))
        .collect();
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let mut members = Vec::new();
    for start in 0..w * h {
        let Some(lab) = labels[start] else { continue };
        if seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        members.clear();
        while let Some(i) = stack.pop() {
            members.push(i);
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if !seen[j] && labels[j] == Some(lab) {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if members.len() < MIN_PIXELS {
            continue;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for &i in &members {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
        let mut mask = vec![false; bw * bh];
        for &i in &members {
            mask[(i / w - y0) * bw + (i % w - x0)] = true;
        }
        let shape = SHAPES
            .iter()
            .copied()
            .max_by(|&a, &b| iou(&mask, a, bw, bh).total_cmp(&iou(&mask, b, bw, bh)))
            .expect("shapes");
        out.push((
            Component {
                colour: COLOURS[lab],
                shape,
                pixels: members.len(),
                cx: (x0 + x1 + 1) as f64 / 2.0,
                cy: (y0 + y1 + 1) as f64 / 2.0,
                bbox: [x0, y0, bw, bh],
            },
            std::mem::take(&mut members),
        ));
    }
    out
}

fn iou(mask: &[bool], shape: Shape, w: usize, h: usize) -> f64 {
    let (mut inter, mut uni) = (0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let a = mask[y * w + x];
            let b = in_template(shape, x, y, w, h);
            inter += (a && b) as usize;
            uni += (a || b) as usize;
        }
    }
    inter as f64 / uni.max(1) as f64
}

/// The nearest clean render of what the analysis saw: each component redrawn as the tooling draws
/// shapes (its shape class's template in a square box, flat in its palette colour) at the box size
/// and offset whose template differs from the component in the fewest pixels; black background.
pub fn clean_render(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut data = vec![0u8; img.data.len()];
    for (c, members) in segment(img) {
        let [x0, y0, bw, bh] = c.bbox;
        let inside = |x: usize, y: usize| x >= x0 && x < x0 + bw && y >= y0 && y < y0 + bh;
        let mut mask = vec![false; bw * bh];
        for &i in &members {
            mask[(i / w - y0) * bw + (i % w - x0)] = true;
        }
        let side = bw.max(bh);
        // (mismatched pixels, box left, box top, box side): boxes that contain the bounding box
        let mut best = (usize::MAX, x0, y0, side);
        for s in side..=side + 2 {
            for bx in (x0 + bw).saturating_sub(s)..=x0 {
                for by in (y0 + bh).saturating_sub(s)..=y0 {
                    if bx + s > w || by + s > h {
                        continue;
                    }
                    let mut miss = 0;
                    for y in by..by + s {
                        for x in bx..bx + s {
                            let t = in_template(c.shape, x - bx, y - by, s, s);
                            let m = inside(x, y) && mask[(y - y0) * bw + (x - x0)];
                            miss += (t != m) as usize;
                        }
                    }
                    if miss < best.0 {
                        best = (miss, bx, by, s);
                    }
                }
            }
        }
        let (_, bx, by, s) = best;
        let rgb = c.colour.rgb();
        for y in 0..s.min(h - by) {
            for x in 0..s.min(w - bx) {
                if in_template(c.shape, x, y, s, s) {
                    let i = 3 * ((by + y) * w + bx + x);
                    data[i..i + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    RgbImage {
        width: img.width,
        height: img.height,
        data,
    }
}

/// Mean absolute difference (0..1, over pixels and channels) between an image and its clean
/// render: an independent check on the `shapes` score. A generator that games the analysis
/// (speckle, off-palette colours, ragged edges that still classify) scores well while this
/// distance grows; clean renders of the tooling are at 0.
pub fn clean_render_distance(img: &RgbImage) -> f64 {
    let r = clean_render(img);
    let sum: u64 = img
        .data
        .iter()
        .zip(&r.data)
        .map(|(&a, &b)| (a as i32 - b as i32).unsigned_abs() as u64)
        .sum();
    sum as f64 / (255.0 * img.data.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_render_of_a_full_width_bar_stays_in_bounds() {
        // a 16 x 4 red bar at the bottom: no square box of side 16 contains it except at the top
        let mut data = vec![0u8; 16 * 16 * 3];
        for y in 12..16 {
            for x in 0..16 {
                data[3 * (y * 16 + x)..3 * (y * 16 + x) + 3].copy_from_slice(&[220, 40, 40]);
            }
        }
        let img = RgbImage::new(16, 16, data);
        let d = clean_render_distance(&img);
        assert!(d > 0.0 && d < 1.0, "{d}");
    }
}
