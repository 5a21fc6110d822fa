//! A queue's stored settings.

/// What is stored about a queue besides its jobs. A queue without stored
/// settings has the defaults (not paused).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueSettings {
    /// Leasing is stopped; enqueues still work.
    pub(crate) paused: bool,
}

/// A change of some settings; `None` fields keep their stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SettingsUpdate {
    pub(crate) paused: Option<bool>,
}

impl SettingsUpdate {
    /// The settings after this update of `stored`.
    pub(crate) fn apply(&self, stored: &QueueSettings) -> QueueSettings {
        QueueSettings {
            paused: self.paused.unwrap_or(stored.paused),
        }
    }
}
