//! Things said in the log at most once a minute each (an unknown path a
//! client keeps calling), however often they happen.

/// The unknown paths said in the log, and when.
pub fn unknown_paths() -> &'static OncePerMinute {
    static SEEN: std::sync::OnceLock<OncePerMinute> = std::sync::OnceLock::new();
    SEEN.get_or_init(OncePerMinute::default)
}

/// Remembers when each key was last let through, for at most `MAX` keys (a
/// caller sending random paths cannot make it grow without bound).
#[derive(Default)]
pub struct OncePerMinute(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl OncePerMinute {
    const MAX: usize = 1000;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether `key` was not let through in the minute before `now`.
    pub fn first_in_a_minute(&self, key: &str, now: std::time::Instant) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = seen.get(key) {
            if now.duration_since(*last) < Self::EVERY {
                return false;
            }
        }
        if seen.len() >= Self::MAX {
            seen.retain(|_, last| now.duration_since(*last) < Self::EVERY);
            if seen.len() >= Self::MAX {
                // Full of fresh paths: the log has said plenty this minute.
                return false;
            }
        }
        seen.insert(key.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn each_key_is_let_through_once_a_minute_and_the_memory_is_bounded() {
        let q = OncePerMinute::default();
        let t = Instant::now();
        assert!(q.first_in_a_minute("/v1/a", t));
        assert!(!q.first_in_a_minute("/v1/a", t + Duration::from_secs(59)));
        assert!(q.first_in_a_minute("/v1/b", t));
        assert!(q.first_in_a_minute("/v1/a", t + Duration::from_secs(61)));
        for i in 0..OncePerMinute::MAX * 2 {
            q.first_in_a_minute(&format!("/v1/x{i}"), t + Duration::from_secs(61));
        }
        assert!(q.0.lock().unwrap().len() <= OncePerMinute::MAX);
        // Two minutes on, the old entries make room again.
        assert!(q.first_in_a_minute("/v1/new", t + Duration::from_secs(200)));
    }
}
