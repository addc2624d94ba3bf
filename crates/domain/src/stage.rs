//! The stages of the pipeline, by name: each keeps a status on every item,
//! and names its logs, metrics and failures.

/// The stages of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    Thumbnail,
    Analysis,
    Embedding,
}

impl StageName {
    /// Every stage, in the order an item goes through them.
    pub const ALL: [Self; 3] = [Self::Thumbnail, Self::Analysis, Self::Embedding];

    /// The stage's name in `items.failed_stage`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thumbnail => "thumbnail",
            Self::Analysis => "analysis",
            Self::Embedding => "embedding",
        }
    }

    /// What a tenant is told when this stage failed an item and nothing
    /// more specific was said: no provider's, bucket's or database's words.
    pub fn public_failure(self) -> &'static str {
        match self {
            Self::Thumbnail => "the image could not be thumbnailed",
            Self::Analysis => "the image could not be analysed",
            Self::Embedding => "the image could not be indexed for search",
        }
    }

    /// The stage named `name` (as [`StageName::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StageName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "thumbnail" => Ok(Self::Thumbnail),
            "analysis" => Ok(Self::Analysis),
            "embedding" => Ok(Self::Embedding),
            other => Err(format!("unknown stage {other:?}")),
        }
    }
}
