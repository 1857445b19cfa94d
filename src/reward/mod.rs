//! Rewards: built-in scorers of (prompt, reasoning, image).

pub mod shapes;
