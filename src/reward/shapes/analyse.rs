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
        out.push(Component {
            colour: COLOURS[lab],
            shape,
            pixels: members.len(),
            cx: (x0 + x1 + 1) as f64 / 2.0,
            cy: (y0 + y1 + 1) as f64 / 2.0,
        });
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
