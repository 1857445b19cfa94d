//! The tiny-shapes prompt grammar -> constraints. Indirect phrasings are resolved (world
//! knowledge, arithmetic, descriptions); open-ended ones become sets of allowed values.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Blue,
    Purple,
}

pub const COLOURS: [Colour; 6] = [
    Colour::Red,
    Colour::Orange,
    Colour::Yellow,
    Colour::Green,
    Colour::Blue,
    Colour::Purple,
];
const WARM: [Colour; 3] = [Colour::Red, Colour::Orange, Colour::Yellow];
const COLD: [Colour; 3] = [Colour::Green, Colour::Blue, Colour::Purple];

impl Colour {
    pub fn rgb(&self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Orange => [245, 140, 20],
            Colour::Yellow => [240, 220, 40],
            Colour::Green => [40, 170, 60],
            Colour::Blue => [40, 90, 230],
            Colour::Purple => [150, 50, 200],
        }
    }
    fn parse(w: &str) -> Option<Colour> {
        Some(match w {
            "red" => Colour::Red,
            "orange" => Colour::Orange,
            "yellow" => Colour::Yellow,
            "green" => Colour::Green,
            "blue" => Colour::Blue,
            "purple" => Colour::Purple,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

pub const SHAPES: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

impl Shape {
    fn parse(w: &str) -> Option<(Shape, bool)> {
        let (stem, plural) = match w.strip_suffix('s') {
            Some(s) => (s, true),
            None => (w, false),
        };
        let s = match stem {
            "circle" => Shape::Circle,
            "square" => Shape::Square,
            "triangle" => Shape::Triangle,
            _ => return None,
        };
        Some((s, plural))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Left,
    Right,
    Top,
    Bottom,
    Centre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

/// One group of objects: a count, a colour and a shape, each from an allowed set.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub counts: Vec<u32>,
    pub colours: Vec<Colour>,
    pub shapes: Vec<Shape>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    Free,
    /// Where the first group's object is.
    At(Position),
    /// The first group's object relative to the second's.
    Related(Relation),
}

/// The constraints of a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub groups: Vec<Group>,
    pub layout: Layout,
}

fn knowledge(item: &str) -> Option<Colour> {
    Some(match item {
        "the sky" | "the sea" => Colour::Blue,
        "grass" | "a leaf" => Colour::Green,
        "a banana" | "the sun" => Colour::Yellow,
        "a tomato" | "a strawberry" => Colour::Red,
        "a carrot" | "a pumpkin" => Colour::Orange,
        "a grape" | "lavender" => Colour::Purple,
        _ => return None,
    })
}

fn arithmetic(phrase: &str) -> Option<u32> {
    Some(match phrase {
        "two minus one" | "three minus two" => 1,
        "one plus one" | "three minus one" => 2,
        "one plus two" | "a triangle has corners" => 3,
        _ => return None,
    })
}

fn number(w: &str) -> Option<u32> {
    Some(match w {
        "a" | "an" | "one" => 1,
        "two" => 2,
        "three" => 3,
        _ => return None,
    })
}

fn temperature(w: &str) -> Option<Vec<Colour>> {
    match w {
        "warm" => Some(WARM.to_vec()),
        "cold" => Some(COLD.to_vec()),
        _ => None,
    }
}

fn one(c: Colour, s: Shape, n: u32) -> Group {
    Group {
        counts: vec![n],
        colours: vec![c],
        shapes: vec![s],
    }
}

/// "{n} {colour} {shape}" at the start of `w`; returns the group and the words used.
fn object(w: &[&str]) -> Option<(Group, usize)> {
    let n = number(w.first()?)?;
    let c = Colour::parse(w.get(1)?)?;
    let (s, plural) = Shape::parse(w.get(2)?)?;
    if plural != (n > 1) {
        return None;
    }
    Some((one(c, s, n), 3))
}

fn position(w: &[&str]) -> Option<Position> {
    Some(match w {
        ["on", "the", "left"] => Position::Left,
        ["on", "the", "right"] => Position::Right,
        ["at", "the", "top"] => Position::Top,
        ["at", "the", "bottom"] => Position::Bottom,
        ["in", "the", "centre"] => Position::Centre,
        _ => return None,
    })
}

fn relation(w: &[&str]) -> Option<(Relation, usize)> {
    Some(match w {
        ["left", "of", ..] => (Relation::LeftOf, 2),
        ["right", "of", ..] => (Relation::RightOf, 2),
        ["above", ..] => (Relation::Above, 1),
        ["below", ..] => (Relation::Below, 1),
        _ => return None,
    })
}

fn explicit(w: &[&str]) -> Option<Spec> {
    let (g0, used) = object(w)?;
    let rest = &w[used..];
    if rest.is_empty() {
        return Some(Spec {
            groups: vec![g0],
            layout: Layout::Free,
        });
    }
    if let Some(p) = position(rest) {
        if g0.counts == [1] {
            return Some(Spec {
                groups: vec![g0],
                layout: Layout::At(p),
            });
        }
    }
    let (r, k) = relation(rest)?;
    let (g1, used1) = object(&rest[k..])?;
    if rest.len() != k + used1 || g0.counts != [1] || g1.counts != [1] {
        return None;
    }
    Some(Spec {
        groups: vec![g0, g1],
        layout: Layout::Related(r),
    })
}

fn free(g: Group) -> Spec {
    Spec {
        groups: vec![g],
        layout: Layout::Free,
    }
}

/// Parse a prompt of the world's grammar (explicit, indirect or open-ended) into constraints.
pub fn parse_prompt(prompt: &str) -> Result<Spec> {
    let lower = prompt.trim().to_lowercase();
    let w: Vec<&str> = lower.split_whitespace().collect();
    let parsed = parse_words(&lower, &w);
    parsed.ok_or_else(|| {
        Error::invalid(format!(
            "the shapes reward cannot parse the prompt {prompt:?}: it is not in the tiny-shapes grammar \
             (see models/tiny-shapes/README.md)"
        ))
    })
}

fn parse_words(text: &str, w: &[&str]) -> Option<Spec> {
    if let Some(s) = explicit(w) {
        return Some(s);
    }
    // "as many {c} {s}s as {phrase}"
    if let ["as", "many", c, s, "as", rest @ ..] = w {
        let (shape, plural) = Shape::parse(s)?;
        let n = arithmetic(&rest.join(" "))?;
        let c = Colour::parse(c)?;
        return plural.then(|| free(one(c, shape, n)));
    }
    // "{n} {s} the colour of {item}"
    if let Some((head, item)) = text.split_once(" the colour of ") {
        let hw: Vec<&str> = head.split_whitespace().collect();
        let [n, s] = hw.as_slice() else { return None };
        let n = number(n)?;
        let (shape, plural) = Shape::parse(s)?;
        let c = knowledge(item)?;
        return (plural == (n > 1)).then(|| free(one(c, shape, n)));
    }
    match w {
        ["a", c, rest @ ..] if Colour::parse(c).is_some() => {
            let c = Colour::parse(c)?;
            let shapes = match rest.join(" ").as_str() {
                "shape with three corners" => vec![Shape::Triangle],
                "shape with four corners" => vec![Shape::Square],
                "round shape" | "shape with no corners" => vec![Shape::Circle],
                "shape" => SHAPES.to_vec(),
                _ => return None,
            };
            Some(free(Group {
                counts: vec![1],
                colours: vec![c],
                shapes,
            }))
        }
        ["a", "few", t, "shapes"] => {
            let t = t.strip_suffix("-coloured")?;
            Some(free(Group {
                counts: vec![2, 3],
                colours: temperature(t)?,
                shapes: SHAPES.to_vec(),
            }))
        }
        ["something", kind @ .., "in", "a", t, "colour"] => {
            let shapes = match kind {
                ["round"] => vec![Shape::Circle],
                ["with", "corners"] => vec![Shape::Square, Shape::Triangle],
                _ => return None,
            };
            Some(free(Group {
                counts: vec![1],
                colours: temperature(t)?,
                shapes,
            }))
        }
        ["some", s, "in", "a", t, "colour"] => {
            let (shape, plural) = Shape::parse(s)?;
            plural.then_some(())?;
            Some(free(Group {
                counts: vec![2, 3],
                colours: temperature(t)?,
                shapes: vec![shape],
            }))
        }
        ["one", "or", "two", c, "shapes"] => Some(free(Group {
            counts: vec![1, 2],
            colours: vec![Colour::parse(c)?],
            shapes: SHAPES.to_vec(),
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_prompts() {
        let s = parse_prompt("two red circles").unwrap();
        assert_eq!(s.groups, vec![one(Colour::Red, Shape::Circle, 2)]);
        let s = parse_prompt("a blue square left of a green triangle").unwrap();
        assert_eq!(s.layout, Layout::Related(Relation::LeftOf));
        assert_eq!(s.groups[1], one(Colour::Green, Shape::Triangle, 1));
        let s = parse_prompt("one yellow circle at the bottom").unwrap();
        assert_eq!(s.layout, Layout::At(Position::Bottom));
    }

    #[test]
    fn indirect_prompts_are_resolved() {
        let s = parse_prompt("a circle the colour of the sky").unwrap();
        assert_eq!(s.groups, vec![one(Colour::Blue, Shape::Circle, 1)]);
        let s = parse_prompt("as many red squares as a triangle has corners").unwrap();
        assert_eq!(s.groups, vec![one(Colour::Red, Shape::Square, 3)]);
        let s = parse_prompt("a green shape with three corners").unwrap();
        assert_eq!(s.groups, vec![one(Colour::Green, Shape::Triangle, 1)]);
    }

    #[test]
    fn open_prompts_become_sets() {
        let s = parse_prompt("a few warm-coloured shapes").unwrap();
        assert_eq!(s.groups[0].counts, vec![2, 3]);
        assert_eq!(s.groups[0].colours, WARM.to_vec());
        let s = parse_prompt("something round in a cold colour").unwrap();
        assert_eq!(s.groups[0].shapes, vec![Shape::Circle]);
        assert_eq!(s.groups[0].colours, COLD.to_vec());
    }

    #[test]
    fn unparsable_prompts_are_errors() {
        for p in [
            "",
            "a dog",
            "two red circle",
            "a red circle left of",
            "three blue squares at the top",
        ] {
            let e = parse_prompt(p).unwrap_err();
            assert!(e.message().contains("cannot parse"), "{p}: {e}");
        }
    }
}
