//! [`BertTokenizer`]: the `tokenizers` crate on `tokenizer.json` (or WordPiece on `vocab.txt`),
//! with padding off, configurable truncation, sentence pairs and SQuAD-style windows.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tokenizers::utils::truncation::{TruncationDirection, TruncationParams};
use tokenizers::{EncodeInput, Encoding, Tokenizer};

pub use tokenizers::utils::truncation::TruncationStrategy;

use super::error::BertError;
use super::model::BertInput;

/// Truncation settings (HF `truncation=`, `max_length=`, `stride=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Longest encoding, special tokens included.
    pub max_length: usize,
    /// Which sequence loses tokens: longest first, only the first, or only the second.
    pub strategy: TruncationStrategy,
    /// Tokens shared by consecutive overflow windows.
    pub stride: usize,
}

/// One encoded input (a sentence or a pair), unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, with `[CLS]` / `[SEP]`.
    pub ids: Vec<u32>,
    /// Segment ids: 0 for the first sentence (and `[CLS]`), 1 for the second.
    pub type_ids: Vec<u32>,
    /// Character offsets `(start, end)` of each token in its own input string (`(0, 0)` for
    /// special tokens).
    pub offsets: Vec<(usize, usize)>,
    /// Which input each token comes from (`None` for special tokens).
    pub sequence_ids: Vec<Option<usize>>,
}

impl Encoded {
    fn from_encoding(e: &Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
            sequence_ids: e.get_sequence_ids(),
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an empty encoding.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A BERT WordPiece tokenizer.
#[derive(Debug, Clone)]
pub struct BertTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    pad_id: u32,
}

impl BertTokenizer {
    /// Loads `tokenizer.json`, turning its padding off and its truncation off (call
    /// [`with_truncation`](Self::with_truncation) to set one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BertError> {
        let path = path.as_ref();
        let mut inner = Tokenizer::from_file(path).map_err(|e| BertError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| BertError::Tokenizer {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Self::finish(inner, path)
    }

    /// Builds the standard BERT WordPiece pipeline on `vocab.txt` (BERT normaliser with
    /// `lowercase` and accent stripping when lowercasing, BERT pre-tokenizer, `[CLS] A [SEP]
    /// B [SEP]` post-processing), as HF does when there is no `tokenizer.json`.
    pub fn from_vocab(path: impl AsRef<Path>, lowercase: bool) -> Result<Self, BertError> {
        use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::bert::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::bert::BertProcessing;

        let path = path.as_ref();
        let err = |message: String| BertError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let path_str = path
            .to_str()
            .ok_or_else(|| err("path is not UTF-8".to_string()))?;
        let model = WordPiece::from_file(path_str)
            .unk_token("[UNK]".to_string())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let id = |tok: &str| {
            tokenizers::Model::token_to_id(&model, tok)
                .ok_or_else(|| err(format!("vocabulary has no {tok} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".to_string(), sep),
                ("[CLS]".to_string(), cls),
            )))
            .with_decoder(Some(WordPieceDecoder::default()));
        Self::finish(inner, path)
    }

    fn finish(inner: Tokenizer, path: &Path) -> Result<Self, BertError> {
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        Ok(Self {
            inner,
            source: path.to_path_buf(),
            pad_id,
        })
    }

    fn err(&self, message: String) -> BertError {
        BertError::Tokenizer {
            path: self.source.clone(),
            message,
        }
    }

    /// Sets (or, with `None`, removes) truncation.
    pub fn with_truncation(mut self, truncation: Option<Truncation>) -> Result<Self, BertError> {
        let params = truncation.map(|t| TruncationParams {
            direction: TruncationDirection::Right,
            max_length: t.max_length,
            strategy: t.strategy,
            stride: t.stride,
        });
        self.inner
            .with_truncation(params)
            .map_err(|e| BertError::Tokenizer {
                path: self.source.clone(),
                message: e.to_string(),
            })?;
        Ok(self)
    }

    /// The underlying `tokenizers` tokenizer (special tokens on, padding off).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The id used to pad batches (`[PAD]`, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn encode_input<'s>(&self, input: impl Into<EncodeInput<'s>>) -> Result<Encoding, BertError> {
        self.inner
            .encode_char_offsets(input, true)
            .map_err(|e| self.err(e.to_string()))
    }

    /// Encodes one sentence (overflow beyond the truncation length is dropped).
    pub fn encode(&self, text: &str) -> Result<Encoded, BertError> {
        Ok(Encoded::from_encoding(&self.encode_input(text)?))
    }

    /// Encodes a sentence pair: `[CLS] a [SEP] b [SEP]` with type ids 0…0 1…1.
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoded, BertError> {
        Ok(Encoded::from_encoding(&self.encode_input((a, b))?))
    }

    /// Encodes a question / context pair into overlapping windows for extractive QA: the
    /// context alone is truncated (`only_second`) to `max_length`, consecutive windows share
    /// `stride` tokens, and offsets map tokens back to characters of their input (as HF's
    /// `return_overflowing_tokens=True, truncation="only_second"`).
    pub fn encode_qa_windows(
        &self,
        question: &str,
        context: &str,
        max_length: usize,
        stride: usize,
    ) -> Result<Vec<Encoded>, BertError> {
        let tok = self.clone().with_truncation(Some(Truncation {
            max_length,
            strategy: TruncationStrategy::OnlySecond,
            stride,
        }))?;
        let mut enc = tok.encode_input((question, context))?;
        let overflow = enc.take_overflowing();
        let mut out = vec![Encoded::from_encoding(&enc)];
        out.extend(overflow.iter().map(Encoded::from_encoding));
        Ok(out)
    }

    /// Pads encodings to the longest one (with [`pad_id`](Self::pad_id), type 0, mask 0) and
    /// makes a batch on `device`.
    pub fn batch(&self, encodings: &[Encoded], device: &Device) -> Result<BertInput, BertError> {
        let seq = encodings.iter().map(Encoded::len).max().unwrap_or(0);
        let pad = |v: &[u32], fill: u32| {
            let mut row = v.to_vec();
            row.resize(seq, fill);
            row
        };
        let ids: Vec<_> = encodings.iter().map(|e| pad(&e.ids, self.pad_id)).collect();
        let types: Vec<_> = encodings.iter().map(|e| pad(&e.type_ids, 0)).collect();
        let mask: Vec<_> = encodings
            .iter()
            .map(|e| pad(&vec![1; e.len()], 0))
            .collect();
        BertInput::from_rows(&ids, &types, &mask, device)
    }
}
