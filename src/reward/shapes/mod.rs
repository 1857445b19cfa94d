//! The `shapes` reward: a GenEval-style score in [0, 1] of how well an image meets its prompt.
//!
//! Each group of the prompt contributes three constraints (its colour is present, its objects
//! have an allowed shape, their count is allowed); a position or relation adds one more. The score
//! is the fraction met, 1 only when all hold. Open-ended sets are met by their best member.

mod analyse;
mod grammar;

pub use analyse::{clean_render, clean_render_distance, components, Component};
pub use grammar::{parse_prompt, Colour, Group, Layout, Position, Relation, Shape, Spec};

use crate::error::Result;
use crate::image::RgbImage;

/// One constraint of a prompt, named for reports (groups count from 1 in the prompt's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Constraint {
    /// The group's colour (the best allowed one) is present.
    Colour(usize),
    /// Every object of that colour has an allowed shape.
    Shape(usize),
    /// The number of objects of that colour is allowed.
    Count(usize),
    /// The first group's largest object is at the prompt's position.
    Position,
    /// The two groups' largest objects are in the prompt's relation.
    Relation,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::Colour(g) => write!(f, "group {g} colour"),
            Constraint::Shape(g) => write!(f, "group {g} shape"),
            Constraint::Count(g) => write!(f, "group {g} count"),
            Constraint::Position => f.write_str("position"),
            Constraint::Relation => f.write_str("relation"),
        }
    }
}

/// Per-constraint outcome of a score.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub met: u32,
    pub total: u32,
    /// The constraints not met, in the prompt's order (empty when all hold).
    pub unmet: Vec<Constraint>,
}

impl Score {
    pub fn value(&self) -> f32 {
        self.met as f32 / self.total as f32
    }
    pub fn all_met(&self) -> bool {
        self.met == self.total
    }
}

/// Score an image against a prompt (parsed each call; use `score_spec` in loops).
pub fn score(prompt: &str, img: &RgbImage) -> Result<Score> {
    Ok(score_spec(&parse_prompt(prompt)?, img))
}

fn largest<'a>(comps: &[&'a Component]) -> Option<&'a Component> {
    comps.iter().copied().max_by_key(|c| c.pixels)
}

/// ([colour present, shapes allowed, count allowed], the group's components) for the best
/// allowed colour (the first of those meeting the most).
fn match_group<'a>(g: &Group, comps: &'a [Component]) -> ([bool; 3], Vec<&'a Component>) {
    let mut best: Option<([bool; 3], Vec<&Component>)> = None;
    let met = |m: &[bool; 3]| m.iter().filter(|&&b| b).count();
    for &c in &g.colours {
        let mine: Vec<&Component> = comps.iter().filter(|k| k.colour == c).collect();
        let present = !mine.is_empty();
        let shape_ok = present && mine.iter().all(|k| g.shapes.contains(&k.shape));
        let count_ok = g.counts.contains(&(mine.len() as u32));
        let m = [present, shape_ok, count_ok];
        if best.as_ref().is_none_or(|(b, _)| met(&m) > met(b)) {
            best = Some((m, mine));
        }
    }
    best.unwrap_or(([false; 3], vec![]))
}

pub fn score_spec(spec: &Spec, img: &RgbImage) -> Score {
    let comps = components(img);
    let (w, h) = (img.width as f64, img.height as f64);
    let mut total = 0;
    let mut unmet = Vec::new();
    let mut matched = Vec::new();
    for (i, g) in spec.groups.iter().enumerate() {
        let (m, mine) = match_group(g, &comps);
        let named = [Constraint::Colour, Constraint::Shape, Constraint::Count];
        for (ok, name) in m.into_iter().zip(named) {
            if !ok {
                unmet.push(name(i + 1));
            }
        }
        total += 3;
        matched.push(mine);
    }
    let layout = match &spec.layout {
        Layout::Free => None,
        Layout::At(p) => {
            let ok = largest(&matched[0]).is_some_and(|c| match p {
                Position::Left => c.cx < 0.45 * w,
                Position::Right => c.cx > 0.55 * w,
                Position::Top => c.cy < 0.45 * h,
                Position::Bottom => c.cy > 0.55 * h,
                Position::Centre => {
                    (c.cx - w / 2.0).abs() <= 0.1 * w && (c.cy - h / 2.0).abs() <= 0.1 * h
                }
            });
            Some((ok, Constraint::Position))
        }
        Layout::Related(r) => {
            let ok = match (largest(&matched[0]), largest(&matched[1])) {
                (Some(a), Some(b)) => match r {
                    Relation::LeftOf => a.cx < b.cx - 1.0,
                    Relation::RightOf => a.cx > b.cx + 1.0,
                    Relation::Above => a.cy < b.cy - 1.0,
                    Relation::Below => a.cy > b.cy + 1.0,
                },
                _ => false,
            };
            Some((ok, Constraint::Relation))
        }
    };
    if let Some((ok, name)) = layout {
        total += 1;
        if !ok {
            unmet.push(name);
        }
    }
    let met = total - unmet.len() as u32;
    Score { met, total, unmet }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas() -> RgbImage {
        RgbImage::new(16, 16, vec![0; 16 * 16 * 3])
    }

    fn fill(img: &mut RgbImage, x0: u32, y0: u32, s: u32, c: Colour, shape: Shape) {
        for y in 0..s {
            for x in 0..s {
                let (px, py, r) = (x as f64 + 0.5, y as f64 + 0.5, s as f64 / 2.0);
                let inside = match shape {
                    Shape::Square => true,
                    Shape::Circle => (px - r).powi(2) + (py - r).powi(2) <= r * r,
                    Shape::Triangle => (px - r).abs() <= py / s as f64 * r + 1e-6,
                };
                if inside {
                    let i = (((y0 + y) * 16 + x0 + x) * 3) as usize;
                    img.data[i..i + 3].copy_from_slice(&c.rgb());
                }
            }
        }
    }

    #[test]
    fn hand_drawn_scene_scores() {
        let mut img = canvas();
        fill(&mut img, 1, 5, 6, Colour::Blue, Shape::Square);
        fill(&mut img, 9, 5, 6, Colour::Green, Shape::Triangle);
        assert_eq!(
            score("a blue square left of a green triangle", &img)
                .unwrap()
                .value(),
            1.0
        );
        // relation reversed: 6 of 7
        let s = score("a blue square right of a green triangle", &img).unwrap();
        assert_eq!((s.met, s.total), (6, 7));
        assert_eq!(s.unmet, [Constraint::Relation]);
        // wrong shape of the first object: 6 of 7
        let s = score("a blue circle left of a green triangle", &img).unwrap();
        assert_eq!((s.met, s.total), (6, 7));
        assert_eq!(s.unmet, [Constraint::Shape(1)]);
        assert_eq!(s.unmet[0].to_string(), "group 1 shape");
        // the second group's colour absent: its colour, shape and count fail, and with no object
        // to compare the relation fails too
        let s = score("a blue square left of a red triangle", &img).unwrap();
        assert_eq!(
            s.unmet,
            [
                Constraint::Colour(2),
                Constraint::Shape(2),
                Constraint::Count(2),
                Constraint::Relation
            ]
        );
        assert_eq!(s.met, 3);
        // open-ended: a cold-coloured thing with corners... but there are two objects of two colours:
        // the best colour (blue: one square) meets all three
        assert_eq!(
            score("something with corners in a cold colour", &img)
                .unwrap()
                .value(),
            1.0
        );
    }

    #[test]
    fn counts_and_positions() {
        let mut img = canvas();
        fill(&mut img, 0, 0, 5, Colour::Red, Shape::Circle);
        fill(&mut img, 8, 8, 5, Colour::Red, Shape::Circle);
        assert_eq!(score("two red circles", &img).unwrap().value(), 1.0);
        let s = score("three red circles", &img).unwrap();
        assert_eq!((s.met, s.total), (2, 3));
        assert_eq!(s.unmet, [Constraint::Count(1)]);
        let s = score("a few warm-coloured shapes", &img).unwrap();
        assert!(s.all_met());
        let mut one = canvas();
        fill(&mut one, 1, 5, 6, Colour::Yellow, Shape::Triangle);
        assert!(score("a yellow triangle on the left", &one)
            .unwrap()
            .all_met());
        let s = score("a yellow triangle on the right", &one).unwrap();
        assert_eq!((s.met, s.total), (3, 4));
        assert_eq!(s.unmet, [Constraint::Position]);
        assert_eq!(s.unmet[0].to_string(), "position");
        assert_eq!(score("a purple triangle on the left", &one).unwrap().met, 0);
    }

    #[test]
    fn empty_image_scores_zero_and_noise_is_ignored() {
        let mut img = canvas();
        assert_eq!(score("a red circle", &img).unwrap().value(), 0.0);
        // two isolated red pixels are below the component size
        img.data[0] = 220;
        img.data[3 * 40] = 220;
        assert_eq!(score("a red circle", &img).unwrap().value(), 0.0);
    }
}
