//! Hugging Face tokenizer plus the manifest's special tokens and templates.

use std::path::Path;

use crate::error::{Error, Result};
use crate::package::Manifest;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub pad: i64,
    pub bos: i64,
    pub end_reasoning: i64,
    template: crate::package::Template,
    max_sequence: usize,
    /// The unknown-word token, when the vocabulary has one.
    unk: Option<u32>,
    /// Unknown prompt words are an error instead of a warning.
    pub strict_vocabulary: bool,
    /// Prompts already warned about (one warning per prompt, not per step).
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Tokenizer {
    pub fn load(path: &Path, m: &Manifest) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            Error::format(format!(
                "{}: not a valid tokenizer.json: {e}",
                path.display()
            ))
        })?;
        let id = |t: &str, what: &str| -> Result<i64> {
            inner.token_to_id(t).map(|i| i as i64).ok_or_else(|| {
                Error::format(format!(
                    "{}: special token {what} = {t:?} (from the manifest) is not in the vocabulary",
                    path.display()
                ))
            })
        };
        let st = &m.special_tokens;
        for (t, w) in [
            (&st.begin_reasoning, "begin_reasoning"),
            (&st.begin_image, "begin_image"),
        ] {
            id(t, w)?;
        }
        if inner.get_vocab_size(true) != m.text.vocab_size {
            return Err(Error::format(format!(
                "{}: vocabulary size {} differs from the manifest's text.vocab_size {}",
                path.display(),
                inner.get_vocab_size(true),
                m.text.vocab_size
            )));
        }
        Ok(Tokenizer {
            pad: id(&st.pad, "pad")?,
            bos: id(&st.bos, "bos")?,
            end_reasoning: id(&st.end_reasoning, "end_reasoning")?,
            unk: ["<unk>", "[UNK]", "<UNK>"]
                .iter()
                .find_map(|t| inner.token_to_id(t)),
            inner,
            template: m.template.clone(),
            max_sequence: m.max_sequence,
            strict_vocabulary: false,
            warned: Default::default(),
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("cannot tokenise {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).unwrap_or_default()
    }

    /// The words of `text` the vocabulary does not know (they would be read as its unknown
    /// token), in order.
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        let Some(unk) = self.unk else {
            return Vec::new();
        };
        let Ok(enc) = self.inner.encode(text, false) else {
            return Vec::new();
        };
        enc.get_ids()
            .iter()
            .zip(enc.get_offsets())
            .filter(|(&id, _)| id == unk)
            .filter_map(|(_, &(a, b))| text.get(a..b).map(str::to_string))
            .collect()
    }

    fn check_prompt(&self, prompt: &str) -> Result<()> {
        if prompt.trim().is_empty() {
            return Err(Error::invalid("the prompt is empty"));
        }
        let unknown = self.unknown_words(prompt);
        if !unknown.is_empty() {
            let msg = format!(
                "the prompt {prompt:?} has words this model's vocabulary does not know ({}); they are read as \
                 the unknown token (the vocabulary is case-sensitive)",
                unknown.join(", ")
            );
            if self.strict_vocabulary {
                return Err(Error::invalid(msg));
            }
            let first = self
                .warned
                .lock()
                .map(|mut w| w.insert(prompt.to_string()))
                .unwrap_or(true);
            if first {
                log::warn!("{msg}");
            }
        }
        Ok(())
    }

    fn checked(&self, ids: Vec<i64>, what: &str, limit: usize) -> Result<Vec<i64>> {
        if ids.len() > limit {
            return Err(Error::invalid(format!(
                "{what} is {} tokens long; this model takes at most {limit}",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// Token ids the text model starts reasoning from; leaves room for `max_new` tokens.
    pub fn reasoning_prompt(&self, prompt: &str, max_new: usize) -> Result<Vec<i64>> {
        self.check_prompt(prompt)?;
        let ids = self.encode(&self.template.reasoning_prompt.replace("{prompt}", prompt))?;
        self.checked(ids, "the prompt", self.max_sequence.saturating_sub(max_new))
    }

    /// Token ids of the image model's context: the template with the prompt's tokens and the
    /// reasoning's token ids spliced in (ids, not re-tokenised text, so any tokenizer round-trips).
    pub fn image_context(&self, prompt: &str, reasoning: Option<&[i64]>) -> Result<Vec<i64>> {
        self.check_prompt(prompt)?;
        let ids = match reasoning {
            Some(r) => {
                let tpl = self.template.image_context.replace("{prompt}", prompt);
                let (a, b) = tpl.split_once("{reasoning}").unwrap_or((tpl.as_str(), ""));
                let mut ids = self.encode(a)?;
                ids.extend_from_slice(r);
                ids.extend(self.encode(b)?);
                ids
            }
            None => self.encode(
                &self
                    .template
                    .image_context_no_reasoning
                    .replace("{prompt}", prompt),
            )?,
        };
        self.checked(ids, "the prompt with its reasoning", self.max_sequence)
    }

    pub fn max_sequence(&self) -> usize {
        self.max_sequence
    }
}
