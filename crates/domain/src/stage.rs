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
