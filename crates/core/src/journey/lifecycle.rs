//! Journey lifecycle: which status changes are allowed. A pure table, so the store and the
//! API agree on it.
//!
//! ```text
//! draft ──publish──> live ──pause──> paused ──resume──> live
//!                     │  └──close──> closed   (no new entries; running instances finish)
//!                     └─────stop───> stopped  (every instance ends now)
//! publish from any status creates a new immutable version and makes the journey live.
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Live,
    Paused,
    Closed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Close,
    Stop,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Live => "live",
            Status::Paused => "paused",
            Status::Closed => "closed",
            Status::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Status::Draft,
            Status::Live,
            Status::Paused,
            Status::Closed,
            Status::Stopped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether new people may enter in this status.
    pub fn accepts_entries(self) -> bool {
        self == Status::Live
    }
}

impl Action {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "close" => Some(Action::Close),
            "stop" => Some(Action::Stop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Close => "close",
            Action::Stop => "stop",
        }
    }
}

/// The status after `action`, or why it is not allowed.
pub fn transition(from: Status, action: Action) -> Result<Status, String> {
    use Action::*;
    use Status::*;
    match (from, action) {
        (Live, Pause) => Ok(Paused),
        (Paused, Resume) => Ok(Live),
        (Live | Paused, Close) => Ok(Closed),
        (Live | Paused | Closed, Stop) => Ok(Stopped),
        (from, action) => Err(format!(
            "cannot {} a journey that is {}",
            action.as_str(),
            from.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table() {
        assert_eq!(transition(Status::Live, Action::Pause), Ok(Status::Paused));
        assert_eq!(transition(Status::Paused, Action::Resume), Ok(Status::Live));
        assert_eq!(
            transition(Status::Paused, Action::Close),
            Ok(Status::Closed)
        );
        assert_eq!(
            transition(Status::Closed, Action::Stop),
            Ok(Status::Stopped)
        );
        assert!(transition(Status::Draft, Action::Pause).is_err());
        assert!(transition(Status::Live, Action::Resume).is_err());
        assert!(
            transition(Status::Closed, Action::Resume)
                .expect_err("not allowed")
                .contains("cannot resume a journey that is closed")
        );
        assert!(transition(Status::Stopped, Action::Stop).is_err());
    }
}
